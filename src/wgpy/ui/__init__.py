"""``wgpy ui``: a web console for WireGuard servers (peers, QR codes, traffic).

The pure parts (``pool``, ``document``, ``clientconf``, ``auth``,
``traffic``) take values and return values; ``conffile`` and ``store`` own
the files; ``console`` joins them to the devices through the UAPI; ``app``
is the thin ASGI shell and ``cli`` the command.  docs/ui.md is the manual.
"""
