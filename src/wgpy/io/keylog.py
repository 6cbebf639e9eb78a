"""A key log that lets Wireshark/tshark decrypt our sessions (``wg.keylog_file``).

Off unless asked for.  The file is created 0600 and appended to, four lines
per completed handshake, in the format of the kernel's extract-handshakes.sh.

wgpyd runs as root and the file receives private keys, so a path someone
else prepared is refused rather than written: a symbolic link (``O_NOFOLLOW``:
it could point the keys, and the 0600 ``fchmod``, at any file), anything
but a regular file (a FIFO would also block the open, a device is no log),
a file owned by another user (who could read it, or hold it open from
before our ``fchmod``), or a file with other hard links.
"""

from __future__ import annotations

import base64
import errno
import os
import stat

from wgpy.protocol import HandshakeKeys

_FLAGS = (os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
          | os.O_NONBLOCK | os.O_NOCTTY)


class KeyLogRefused(OSError):
    """The path exists but is not a file we may write keys to; ``str`` says why."""


def _refusal(st: os.stat_result) -> str | None:
    if not stat.S_ISREG(st.st_mode):
        if stat.S_ISFIFO(st.st_mode):
            return "it is a FIFO"
        if stat.S_ISSOCK(st.st_mode):
            return "it is a socket"
        if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
            return "it is a device"
        return "it is not a regular file"
    if st.st_uid != os.geteuid():
        return f"it is owned by uid {st.st_uid}, not by uid {os.geteuid()}"
    if st.st_nlink > 1:
        return f"it has {st.st_nlink} hard links"
    return None


class KeyLog:
    def __init__(self, path: str) -> None:
        """Open (create, 0600) ``path`` for appending.

        :raises KeyLogRefused: ``path`` is a symbolic link, not a regular file,
            owned by another user, or hard-linked elsewhere.
        :raises OSError: it cannot be opened (the errno says why).
        """
        self.path = path
        old = os.umask(0o077)
        try:
            fd = os.open(path, _FLAGS, 0o600)
        except OSError as e:
            if e.errno in (errno.ELOOP, errno.ENXIO):
                # ELOOP: O_NOFOLLOW met a link (or a path loops); ENXIO:
                # O_NONBLOCK met a FIFO nobody reads (or a device that is absent).
                try:
                    why = "it is a symbolic link" if os.path.islink(path) else _refusal(
                        os.lstat(path))
                except OSError:
                    why = None
                if why is not None:
                    raise KeyLogRefused(e.errno, why) from None
            raise
        finally:
            os.umask(old)
        try:
            why = _refusal(os.fstat(fd))
            if why is not None:
                raise KeyLogRefused(errno.EPERM, why)
            os.set_blocking(fd, True)
            os.fchmod(fd, 0o600)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

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
