"""Tamper-evident audit log: RFC 6962 Merkle tree, proofs and signed checkpoints."""

__all__: list[str] = []
