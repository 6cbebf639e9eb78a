"""The key log refuses paths someone else prepared (io/keylog.py).

wgpyd runs as root and writes private keys there: a planted symbolic link, a
FIFO or device, a file owned by another user or hard-linked elsewhere must
neither receive keys nor have its mode changed, and nothing may block.
"""

from __future__ import annotations

import errno
import os
import stat
import time
from pathlib import Path

import pytest

from wgpy.io.keylog import KeyLog, KeyLogRefused
from wgpy.protocol import HandshakeKeys


def keys() -> HandshakeKeys:
    return HandshakeKeys(local_static_private=b"\x01" * 32, remote_static_public=b"\x02" * 32,
                         local_ephemeral_private=b"\x03" * 32, preshared_key=b"\x00" * 32)


def planted_target(tmp_path: Path) -> Path:
    target = tmp_path / "target"
    target.write_text("original\n")
    os.chmod(target, 0o644)
    return target


def assert_untouched(target: Path) -> None:
    assert target.read_text() == "original\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o644


def refused(path: Path) -> str:
    t0 = time.monotonic()
    with pytest.raises(KeyLogRefused) as e:
        KeyLog(str(path))
    assert time.monotonic() - t0 < 2  # never blocks
    return str(e.value.strerror)


def test_a_new_file_is_created_0600_and_appended_to(tmp_path: Path) -> None:
    path = tmp_path / "keys.log"
    log = KeyLog(str(path))
    log.write(keys())
    log.close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text().count("LOCAL_STATIC_PRIVATE_KEY = AQEB") == 1
    # An existing file of ours with a wider mode is narrowed, and kept.
    os.chmod(path, 0o644)
    log = KeyLog(str(path))
    log.write(keys())
    log.close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text().count("PRESHARED_KEY = ") == 2


def test_a_symbolic_link_is_refused_and_its_target_untouched(tmp_path: Path) -> None:
    target = planted_target(tmp_path)
    link = tmp_path / "keys.log"
    link.symlink_to(target)
    assert refused(link) == "it is a symbolic link"
    assert_untouched(target)
    dangling = tmp_path / "dangling.log"
    dangling.symlink_to(tmp_path / "would-be-created")
    assert refused(dangling) == "it is a symbolic link"
    assert not (tmp_path / "would-be-created").exists()


def test_a_fifo_is_refused_without_blocking_with_or_without_a_reader(tmp_path: Path) -> None:
    fifo = tmp_path / "keys.fifo"
    os.mkfifo(fifo, 0o600)
    assert refused(fifo) == "it is a FIFO"  # nobody reads: a plain open would block
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        assert refused(fifo) == "it is a FIFO"
        assert os.read(reader, 1) == b""  # nothing was written: the writer opened and closed
    finally:
        os.close(reader)


def test_a_device_is_refused() -> None:
    assert refused(Path("/dev/null")) == "it is a device"


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
def test_a_file_owned_by_another_user_is_refused(tmp_path: Path) -> None:
    target = planted_target(tmp_path)
    os.chown(target, 65534, 65534)
    assert refused(target) == f"it is owned by uid 65534, not by uid {os.geteuid()}"
    assert_untouched(target)


def test_a_hard_linked_file_is_refused(tmp_path: Path) -> None:
    target = planted_target(tmp_path)
    os.link(target, tmp_path / "keys.log")
    assert refused(tmp_path / "keys.log") == "it has 2 hard links"
    assert_untouched(target)


def test_other_failures_are_plain_os_errors(tmp_path: Path) -> None:
    with pytest.raises(OSError) as e:
        KeyLog(str(tmp_path))
    assert e.value.errno == errno.EISDIR and not isinstance(e.value, KeyLogRefused)
    with pytest.raises(FileNotFoundError):
        KeyLog(str(tmp_path / "missing" / "keys.log"))
