"""fangwire's A2A server and client."""
