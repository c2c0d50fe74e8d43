"""Test support for fangwire and for authors of fangwire plugins.

Opt in from a ``conftest.py`` with ``pytest_plugins = ["fangwire.testing.fixtures"]``.
"""
