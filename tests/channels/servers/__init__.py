"""Real protocol servers started by the channel tests (one module per server)."""
