"""Streaming server for CRI Exec, Attach and PortForward (WebSocket remotecommand/portforward)."""
