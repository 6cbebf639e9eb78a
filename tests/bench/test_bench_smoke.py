"""CI smoke check of the benchmark: ``bench/run.py --smoke`` runs and reports.

A benchmark, not a test: no timing is asserted, only that every pair was
measured, the table was printed and the JSON written.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from wgpy.testing.lab import require

pytestmark = pytest.mark.netns

RUN = Path(__file__).resolve().parents[2] / "bench" / "run.py"


def test_bench_smoke(tmp_path: Path) -> None:
    require("ip", "wg", "wireguard-go", "iperf3", "ping")
    p = subprocess.run(
        [sys.executable, str(RUN), "--smoke", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=240,
    )
    assert p.returncode == 0, p.stdout + p.stderr
    assert "| metric" in p.stdout and "wgpyd<->wg-go" in p.stdout, p.stdout
    doc = json.loads((tmp_path / "results.json").read_text())
    summary = doc["summary"]
    for row in ("wg-go<->wg-go", "wgpyd<->wgpyd", "wgpyd<->wg-go"):
        assert summary[row]["tcp1"]["median"] > 0, (row, doc["notes"])
        assert summary[row]["ping_ms"]["median"] > 0, (row, doc["notes"])
        assert summary[row]["handshake_ms"]["median"] > 0, (row, doc["notes"])
    assert summary["wgpyd<->wgpyd"]["peers_load_s"]["n"] == 1
    # The ping that runs through the flood (its -w once got "2.5" and never ran).
    assert summary["wgpyd<->wgpyd"]["flood_ping_ms"]["median"] > 0, doc["notes"]
    # The flood (wgpy.testing.flood --valid) got handshakes answered: a broken
    # flooder would otherwise only leave a note.
    for row in ("wg-go<->wg-go", "wgpyd<->wgpyd"):
        assert summary[row]["flood_hs_per_s"]["median"] > 0, (row, doc["notes"])
    assert not list(tmp_path.glob("labs-*")), "lab directories left behind"
