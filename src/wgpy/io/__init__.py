"""The thin I/O layer around the sans-IO core: TUN, UDP, UAPI socket, event loop."""
