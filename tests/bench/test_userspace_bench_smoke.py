"""CI smoke check of ``bench/userspace.py --smoke``: it runs, measures every
client it has, checks each download's sha256 and writes its JSON.  No
timing is asserted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from wgpy.testing.lab import require

pytestmark = pytest.mark.netns

RUN = Path(__file__).resolve().parents[2] / "bench" / "userspace.py"


def test_userspace_bench_smoke(tmp_path: Path) -> None:
    require("ip", "wg", "setpriv")
    p = subprocess.run([sys.executable, str(RUN), "--smoke", "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    doc = json.loads((tmp_path / "results.json").read_text())
    for row in ("wgpy.userspace", "kernel TCP"):
        assert len(doc["samples"][row]["download_s"]) == 1, doc
        assert len(doc["samples"][row]["request_s"]) == 10, doc
    assert "| wgpy.userspace |" in p.stdout
    assert not list(tmp_path.glob("labs-*")), "lab directories left behind"
