"""The userspace TCP over a bad network: loss, reordering, delay with jitter.

The impairment is ``wgpy.testing.impair``, a UDP relay on the WireGuard
path (this CI kernel has no netem; WireGuard is UDP, so a relay is the same
network to both ends).  CI moves a few MiB each way per impairment; the
100 MiB runs are ``bench/userspace.py --impaired``."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from wgpy.testing.lab import Lab, require
from wgpy.testing.userlab import (
    HTTP_PORT,
    PEER_OUTER,
    SINK_PORT,
    SRC,
    WG_PORT,
    UserLab,
    build,
)

pytestmark = pytest.mark.netns

FILE_MIB = 16
# name: (loss, one-way delay s, jitter s, MiB each way)
IMPAIRMENTS = {
    "loss-1pct": (0.01, 0.0, 0.0, 4),
    "loss-5pct": (0.05, 0.0, 0.0, 1),
    "reorder": (0.0, 0.001, 0.004, 4),
    "delay-20ms-jitter": (0.0, 0.020, 0.005, 2),
}


@pytest.fixture(scope="module")
def ulab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UserLab]:
    require("ip", "wg", "setpriv")
    lab = Lab(tmp_path_factory.mktemp("impaired"))
    try:
        yield build(lab, "wgpyd", big_file_mib=FILE_MIB)
    finally:
        lab.close()


def run(ul: UserLab, *args: str) -> dict[str, Any]:
    p = ul.python("wgpy.testing.userclient", *args, timeout=300)
    result: dict[str, Any] = json.loads(p.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.parametrize("name", sorted(IMPAIRMENTS))
def test_transfers_survive(ulab: UserLab, name: str) -> None:
    loss, delay, jitter, mib = IMPAIRMENTS[name]
    port = 52000 + sorted(IMPAIRMENTS).index(name)
    ulab.lab.popen(ulab.client_ns, [
        sys.executable, "-m", "wgpy.testing.impair", "--listen", f"127.0.0.1:{port}",
        "--to", f"{PEER_OUTER}:{WG_PORT}", "--loss", str(loss), "--delay", str(delay),
        "--jitter", str(jitter), "--seed", str(port), "--lifetime", "600"],
        env={"PYTHONPATH": str(SRC)}, log=f"impair-{name}.log")
    ulab.lab.wait_for("relay", lambda: "ready" in ulab.lab.log(f"impair-{name}.log"))
    cfg = ulab.write_config(f"{name}.conf", f"127.0.0.1:{port}")
    up = run(ulab, "upload", str(cfg), "--port", str(SINK_PORT), "--bytes", str(mib << 20))
    assert up["sink_bytes"] == mib << 20 and up["sink_sha256"] == up["sent_sha256"]
    down = run(ulab, "download", str(cfg), "--port", str(HTTP_PORT), "--path", "/big.bin")
    want = ulab.lab.run(None, f"sha256sum {ulab.files / 'big.bin'}").stdout.split()[0]
    assert down["bytes"] == FILE_MIB << 20 and down["sha256"] == want
    print(f"{name}: up {mib} MiB {up['seconds']:.1f}s, down {FILE_MIB} MiB "
          f"{down['seconds']:.1f}s")
