"""Shared building blocks for channel adapters."""
