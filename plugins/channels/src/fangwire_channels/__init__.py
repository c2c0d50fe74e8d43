"""fangwire's built-in channel adapters, one module per platform."""
