"""A private Prometheus server for tests: Debian's ``prometheus`` binary with
its own configuration and data directory in the test's directory, listening
on loopback, scraping the targets it is given.  Never the system service.

    prom = Prometheus.start(lab, ["127.0.0.1:9586"], interval=1.0)
    prom.query('rate(wireguard_peer_transmit_bytes_total[5s])', at=t)
"""

from __future__ import annotations

import json
import socket
import urllib.parse
import urllib.request
from dataclasses import dataclass

from wgpy.testing.lab import Lab, LabError


def free_port() -> int:
    """A TCP port free on 127.0.0.1 at the time of asking."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Prometheus:
    lab: Lab
    port: int

    @classmethod
    def start(cls, lab: Lab, targets: list[str], interval: float = 1.0) -> Prometheus:
        """Run prometheus scraping ``targets`` (``HOST:PORT``) every ``interval``
        seconds; return once it is ready.  The lab stops it on close."""
        port = free_port()
        workdir = lab.workdir / f"prometheus-{port}"
        workdir.mkdir()
        step = f"{int(interval * 1000)}ms"
        cfg = workdir / "prometheus.yml"
        cfg.write_text(
            "global:\n"
            f"  scrape_interval: {step}\n"
            f"  scrape_timeout: {step}\n"
            "scrape_configs:\n"
            "  - job_name: wgpy\n"
            f"    static_configs:\n      - targets: {json.dumps(targets)}\n")
        lab.popen(None, ["prometheus", f"--config.file={cfg}",
                         f"--storage.tsdb.path={workdir / 'data'}",
                         f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
                  log=f"prometheus-{port}.log")
        prom = cls(lab, port)
        lab.wait_for("prometheus ready", prom.ready, timeout=30, step=0.2)
        return prom

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=2) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    def query(self, promql: str, at: float | None = None) -> list[tuple[dict[str, str], float]]:
        """An instant query: ``[(labels, value), ...]``."""
        params = {"query": promql}
        if at is not None:
            params["time"] = f"{at:.3f}"
        url = f"http://127.0.0.1:{self.port}/api/v1/query?" + urllib.parse.urlencode(params)
        with urllib.request.urlopen(url, timeout=10) as r:
            doc = json.loads(r.read())
        if doc.get("status") != "success":
            raise LabError(f"prometheus query {promql!r}: {doc}")
        return [(item["metric"], float(item["value"][1])) for item in doc["data"]["result"]]

    def targets_up(self) -> bool:
        return any(v == 1 for _, v in self.query("up"))
