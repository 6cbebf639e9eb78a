"""What running as a system service takes: readiness and stop notifications
for systemd (``notify``), log lines that fit the journal (``journal``), and a
Prometheus ``/metrics`` endpoint beside a daemon's own loop (``metrics``).

The daemons (wgpyd, the registry, discover, the proxy, the exporter) use it;
it uses only ``wgpy.control`` below it.
"""
