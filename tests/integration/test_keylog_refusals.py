"""``wgpyd --keylog FILE`` refuses a FILE someone else prepared: a clear message,
exit status 1, nothing created, and the planted file's target untouched."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import pytest

from wgpy.testing.lab import Lab
from wgpy.testing.nodes import wgpyd_argv

pytestmark = pytest.mark.netns

RUN = Path("/var/run/wireguard")


@pytest.mark.parametrize(("plant", "why"), [
    ("symlink", "it is a symbolic link"),
    ("fifo", "it is a FIFO"),
    ("other-user", "it is owned by uid 65534, not by uid 0"),
    ("hard-link", "it has 2 hard links"),
])
def test_wgpyd_refuses_a_planted_key_log(lab: Lab, plant: str, why: str) -> None:
    ns = lab.netns("klog")
    ifname = lab.wg_name()
    target = lab.workdir / "precious"
    target.write_text("original\n")
    os.chmod(target, 0o644)
    path = lab.workdir / "keys.log"
    if plant == "symlink":
        path.symlink_to(target)
    elif plant == "fifo":
        os.mkfifo(path, 0o600)
    elif plant == "other-user":
        path = target
        os.chown(path, 65534, 65534)
    else:
        os.link(target, path)
    t0 = time.monotonic()
    p = lab.run(ns, [*wgpyd_argv(), "-f", "--keylog", str(path), ifname], check=False,
                timeout=20)
    assert time.monotonic() - t0 < 10
    assert p.returncode == 1
    assert p.stderr == f"wgpyd: refusing to open key log {path}: {why}\n"
    assert target.read_text() == "original\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert not (RUN / f"{ifname}.sock").exists()
    assert lab.run(ns, f"ip link show {ifname}", check=False).returncode != 0
