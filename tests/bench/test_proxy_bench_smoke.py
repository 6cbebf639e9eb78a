"""CI smoke check of the proxy benchmark: ``bench/proxy.py --smoke`` runs
HAProxy and ``wgpy proxy`` on the same TPROXY listener and reports.

A benchmark, not a test: no figure is asserted, only that each measurement
was made for both proxies, the table was printed and the JSON written."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from wgpy.testing.lab import require

pytestmark = pytest.mark.netns

RUN = Path(__file__).resolve().parents[2] / "bench" / "proxy.py"


def test_proxy_bench_smoke(tmp_path: Path) -> None:
    require("ip", "wg", "haproxy", "ab", "iperf3", "nft", "curl")
    p = subprocess.run([sys.executable, str(RUN), "--smoke", "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "| metric" in p.stdout and "wgpy / HAProxy" in p.stdout, p.stdout
    doc = json.loads((tmp_path / "results.json").read_text())
    for proxy in ("haproxy", "wgpy"):
        summary = doc["summary"][proxy]
        for key in ("conn_per_s", "cpu_us_per_conn", "tput_gbit", "cpu_s_per_gb", "c1000_open_s",
                    "c1000_rss_mb"):
            assert summary[key]["median"] > 0, (proxy, key, doc["notes"])
    assert not [n for n in doc["notes"] if "failed" in n or "aborted" in n], doc["notes"]
    assert "throughput: x" in p.stdout and "connection rate: x" in p.stdout
    assert not list(tmp_path.glob("labs-*")), "lab directories left behind"
