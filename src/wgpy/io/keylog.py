"""A key log that lets Wireshark/tshark decrypt our sessions (``wg.keylog_file``).

Off unless asked for.  The file is created 0600 and appended to, four lines
per completed handshake, in the format of the kernel's extract-handshakes.sh.

It receives private keys, so it is opened with care: never through a
symbolic link (``O_NOFOLLOW``: a link planted at the path must not receive
the keys, nor have its target's mode changed), only if it is a regular file
(a FIFO would block or hand the keys to whoever reads it) owned by us, and
its mode is set to 0600 on the file we opened, not on a path.
"""

from __future__ import annotations

import base64
import errno
import os
import stat

from wgpy.protocol import HandshakeKeys


class KeyLogRefused(OSError):
    """The key log path is not a file we may write keys to; the text says why."""


_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK


class KeyLog:
    def __init__(self, path: str) -> None:
        """Open (or create) ``path``; KeyLogRefused or OSError when it will not do."""
        self.path = path
        old = os.umask(0o077)
        try:
            self._fd = os.open(path, _FLAGS, 0o600)
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise KeyLogRefused(e.errno, "it is a symbolic link") from None
            if e.errno == errno.ENXIO:
                raise KeyLogRefused(e.errno, "it is a FIFO, not a regular file") from None
            raise
        finally:
            os.umask(old)
        try:
            st = os.fstat(self._fd)
            if not stat.S_ISREG(st.st_mode):
                raise KeyLogRefused(errno.EINVAL, "it is not a regular file")
            if st.st_uid != os.geteuid():
                raise KeyLogRefused(errno.EPERM, f"it belongs to another user (uid {st.st_uid})")
            os.fchmod(self._fd, 0o600)
            os.set_blocking(self._fd, True)
        except OSError:
            os.close(self._fd)
            raise

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
