"""Reading and writing a configuration file safely.

A write is all or nothing and never blind:

- the new text goes to a temporary file in the same directory (mode 0600,
  ``O_EXCL``), is flushed and ``fsync``-ed, then renamed over the file, and
  the directory is ``fsync``-ed: a crash leaves the old file or the new one,
  never half of one;
- just before the rename the file is read again: if it is no longer what
  the edit was made from (someone edited it by hand meanwhile), nothing is
  written and ``FileChanged`` says so.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path


class FileChanged(Exception):
    """The file is not what the change was made from: it was edited meanwhile."""


@dataclass(frozen=True)
class Snapshot:
    path: Path
    text: str
    version: str  # sha256 of the bytes: what forms carry to detect a stale page

    @classmethod
    def of(cls, path: Path, data: bytes) -> Snapshot:
        return cls(path, data.decode("utf-8", "replace"), hashlib.sha256(data).hexdigest()[:16])


def read(path: Path) -> Snapshot:
    """:raises OSError: the file cannot be read."""
    return Snapshot.of(path, path.read_bytes())


def write(snapshot: Snapshot, text: str) -> Snapshot:
    """Replace ``snapshot.path`` by ``text`` if it still holds ``snapshot``.

    :raises FileChanged: the file was changed since ``snapshot`` was read.
    :raises OSError: the write failed; the file is as it was.
    """
    path = snapshot.path
    data = text.encode()
    fd, tmp = _create_temp(path)
    try:
        os.fchmod(fd, 0o600)  # whatever the umask: the file holds private keys
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if read(path).version != snapshot.version:
            raise FileChanged(
                f"{path} was changed on disk since the console read it (edited by hand?): "
                "nothing was written; the page now shows the file as it is"
            )
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)
    return Snapshot.of(path, data)


def _create_temp(path: Path) -> tuple[int, str]:
    for n in range(100):
        tmp = path.parent / f".{path.name}.wgpy-ui.{os.getpid()}.{n}"
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600), str(
                tmp)
        except FileExistsError:
            continue
    raise FileExistsError(f"cannot create a temporary file beside {path}")


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
