"""Control plane: the UAPI protocol, configuration files and keys."""
