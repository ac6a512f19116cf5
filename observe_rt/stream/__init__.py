"""Streaming server for CRI Exec, Attach and PortForward (WebSocket and SPDY/3.1)."""
