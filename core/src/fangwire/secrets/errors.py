"""Errors raised by the secrets layer."""

from __future__ import annotations

__all__ = ["SecretStoreError"]


class SecretStoreError(Exception):
    """The secret store cannot be used: bad key, tampered or corrupt data, insecure key file.

    Contract: the message may name an entry (service and username) or a file name, but never
    contains a secret value. Messages of errors that can be raised while serving requests
    never contain absolute paths.
    """
