"""Writing a configuration file: atomic, 0600, and never over a file changed meanwhile."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from wgpy.ui import conffile


def leftovers(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir() if p.name != "wg0.conf")


def test_write_replaces_atomically_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "wg0.conf"
    path.write_text("old\n")
    os.chmod(path, 0o644)
    old = os.umask(0)
    try:
        snap = conffile.write(conffile.read(path), "new\n")
    finally:
        os.umask(old)
    assert path.read_text() == "new\n" and snap.text == "new\n"
    assert path.stat().st_mode & 0o777 == 0o600
    assert leftovers(tmp_path) == []
    assert snap.version == conffile.read(path).version != conffile.Snapshot.of(path,
                                                                                b"old\n").version


def test_a_file_edited_meanwhile_is_not_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "wg0.conf"
    path.write_text("as read\n")
    snap = conffile.read(path)
    path.write_text("edited by hand\n")
    with pytest.raises(conffile.FileChanged, match="changed on disk"):
        conffile.write(snap, "the console's change\n")
    assert path.read_text() == "edited by hand\n"
    assert leftovers(tmp_path) == []


def test_a_failed_write_leaves_the_old_file_whole(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "wg0.conf"
    path.write_text("[Interface]\nthe old file\n")
    snap = conffile.read(path)

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError, match="No space left"):
        conffile.write(snap, "[Interface]\n" + "x" * 100000)
    assert path.read_text() == "[Interface]\nthe old file\n"
    assert leftovers(tmp_path) == []
