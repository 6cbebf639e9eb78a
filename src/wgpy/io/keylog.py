"""A key log that lets Wireshark/tshark decrypt our sessions (``wg.keylog_file``).

Off unless asked for.  The file is created 0600 and appended to, four lines
per completed handshake, in the format of the kernel's extract-handshakes.sh.
"""

from __future__ import annotations

import base64
import os

from wgpy.protocol import HandshakeKeys


class KeyLog:
    def __init__(self, path: str) -> None:
        self.path = path
        old = os.umask(0o077)
        try:
            self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        finally:
            os.umask(old)
        os.fchmod(self._fd, 0o600)

    def write(self, keys: HandshakeKeys) -> None:
        def b64(b: bytes) -> str:
            return base64.b64encode(b).decode()

        text = (
            f"LOCAL_STATIC_PRIVATE_KEY = {b64(keys.local_static_private)}\n"
            f"REMOTE_STATIC_PUBLIC_KEY = {b64(keys.remote_static_public)}\n"
            f"LOCAL_EPHEMERAL_PRIVATE_KEY = {b64(keys.local_ephemeral_private)}\n"
            f"PRESHARED_KEY = {b64(keys.preshared_key)}\n"
        )
        os.write(self._fd, text.encode())

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
