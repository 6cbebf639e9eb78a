"""CI smoke check of ``bench/nat.py --smoke``: it runs one short round of every
figure in the NAT lab and writes its JSON.  No timing is asserted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from wgpy.testing.lab import require

pytestmark = pytest.mark.netns

RUN = Path(__file__).resolve().parents[2] / "bench" / "nat.py"


def test_nat_bench_smoke(tmp_path: Path) -> None:
    require("ip", "wg", "iperf3", "iptables", "conntrack", "dig", "named")
    p = subprocess.run([sys.executable, str(RUN), "--smoke", "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=400)
    assert p.returncode == 0, p.stdout + p.stderr
    doc = json.loads((tmp_path / "results.json").read_text())
    assert all(len(xs) >= 1 for xs in doc["samples"].values()), doc
    assert "| throughput relayed (Mbit/s) |" in p.stdout
    assert not list(tmp_path.glob("labs-*")), "lab directories left behind"
