"""Prometheus metrics of ``wgpy proxy``: what ``wgpy proxy status`` shows.

A scrape takes ``ProxyServer.status()`` on the proxy's loop
(``service.metrics.on_loop``), the same dictionary the control socket
answers, and turns it into families, so the two views cannot disagree.
Traffic no rule covers is counted under ``rule="(none)"``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

UNMATCHED = "(none)"


def _num(d: Mapping[str, object], key: str) -> float:
    v = d.get(key, 0)
    return float(v) if isinstance(v, int | float) else 0.0


def proxy_families(status: Mapping[str, object]) -> Iterator[Metric]:
    rules: dict[str, Mapping[str, object]] = {}
    raw = status.get("rules")
    if isinstance(raw, dict):
        rules.update({str(k): v for k, v in raw.items() if isinstance(v, dict)})
    unmatched = status.get("unmatched")
    if isinstance(unmatched, dict):
        rules[UNMATCHED] = unmatched
    conns = CounterMetricFamily("wgpy_proxy_connections",
                                "TCP connections carried to an origin", labels=["rule"])
    active = GaugeMetricFamily("wgpy_proxy_active", "Connections and UDP flows open now",
                               labels=["rule", "protocol"])
    bytes_ = CounterMetricFamily("wgpy_proxy_bytes",
                                 "TCP bytes carried: up is client to origin, down the reverse",
                                 labels=["rule", "direction"])
    refused = CounterMetricFamily("wgpy_proxy_refused",
                                  "Connections and flows refused, by reason",
                                  labels=["rule", "reason"])
    failures = CounterMetricFamily("wgpy_proxy_origin_failures",
                                   "Failed connects to an origin (another may have worked)",
                                   labels=["rule"])
    silent = CounterMetricFamily("wgpy_proxy_origin_silent_closes",
                                 "Origins that closed without a byte while the client talked",
                                 labels=["rule"])
    flows = CounterMetricFamily("wgpy_proxy_udp_flows", "UDP flows carried", labels=["rule"])
    dgrams = CounterMetricFamily("wgpy_proxy_udp_datagrams", "UDP datagrams carried",
                                 labels=["rule", "direction"])
    dropped = CounterMetricFamily("wgpy_proxy_udp_dropped", "UDP datagrams dropped",
                                  labels=["rule"])
    for name, st in sorted(rules.items()):
        conns.add_metric([name], _num(st, "connections"))
        active.add_metric([name, "tcp"], _num(st, "active"))
        active.add_metric([name, "udp"], _num(st, "udp_active"))
        bytes_.add_metric([name, "up"], _num(st, "bytes_up"))
        bytes_.add_metric([name, "down"], _num(st, "bytes_down"))
        reasons = st.get("refused")
        if isinstance(reasons, dict):
            for reason, n in sorted(reasons.items()):
                refused.add_metric([name, str(reason)], float(n))
        failures.add_metric([name], _num(st, "origin_failures"))
        silent.add_metric([name], _num(st, "origin_silent_closes"))
        flows.add_metric([name], _num(st, "udp_flows"))
        dgrams.add_metric([name, "up"], _num(st, "udp_datagrams_up"))
        dgrams.add_metric([name, "down"], _num(st, "udp_datagrams_down"))
        dropped.add_metric([name], _num(st, "udp_dropped"))
    yield from (conns, active, bytes_, refused, failures, silent, flows, dgrams, dropped)
    up = GaugeMetricFamily("wgpy_proxy_origin_up", "1 if the origin's health checks pass",
                           labels=["origin"])
    checks = CounterMetricFamily("wgpy_proxy_origin_checks", "Health checks of the origin",
                                 labels=["origin"])
    origins = status.get("origins")
    if isinstance(origins, dict):
        for ep, h in sorted(origins.items()):
            if isinstance(h, dict):
                up.add_metric([str(ep)], 1.0 if h.get("up") else 0.0)
                checks.add_metric([str(ep)], _num(h, "checks"))
    reloads = CounterMetricFamily("wgpy_proxy_reloads", "Reloads, by result", labels=["result"])
    reloads.add_metric(["ok"], _num(status, "reloads"))
    reloads.add_metric(["refused"], _num(status, "reload_failures"))
    total = GaugeMetricFamily("wgpy_proxy_connections_open",
                              "Connections and flows open now, over every rule")
    total.add_metric([], _num(status, "active"))
    limit = GaugeMetricFamily("wgpy_proxy_max_connections", "MaxConnections")
    limit.add_metric([], _num(status, "max_connections"))
    yield from (up, checks, reloads, total, limit)
