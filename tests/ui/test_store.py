"""The console's SQLite store, and traffic rates from its samples."""

from __future__ import annotations

from pathlib import Path

from wgpy.ui.store import ClientRecord, Store
from wgpy.ui.traffic import Point, Sample, downsample, human_ago, human_bytes, rates


def test_file_mode_and_clients_survive_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "state" / "console.db"
    s = Store(path)
    s.add_client(ClientRecord("wg0", "K1", "PRIV", 100.0, None))
    s.set_expiry("wg0", "K1", 500.0, 200.0)
    s.set_expiry("wg0", "K2", 600.0, 200.0)  # a hand-made peer gets a record
    s.close()
    assert path.stat().st_mode & 0o777 == 0o600
    s = Store(path)
    assert s.client("wg0", "K1") == ClientRecord("wg0", "K1", "PRIV", 100.0, 500.0)
    assert s.client("wg0", "K2") == ClientRecord("wg0", "K2", None, 200.0, 600.0)
    assert s.client("wg1", "K1") is None
    s.forget("wg0", "K1")
    assert set(s.clients("wg0")) == {"K2"}
    s.close()


def test_history_is_bounded_in_count_and_age(tmp_path: Path) -> None:
    s = Store(tmp_path / "db", max_samples=50, retention=1000)
    for t in range(200):
        s.add_samples("wg0", float(t), {"A": (t * 10, t), "B": (t, t)})
    assert len(s.samples("wg0", "A", 0)) == 50
    assert s.samples("wg0", "A", 0)[-1] == Sample(199.0, 1990, 199)
    assert s.sample_count() == 100
    s.add_samples("wg0", 5000.0, {"A": (0, 0)})  # long after: the old ones are gone
    assert s.sample_count() == 1
    s.close()
    s = Store(tmp_path / "db")
    assert s.samples("wg0", "A", 0) == [Sample(5000.0, 0, 0)]  # kept across restarts
    s.close()


def test_one_time_links(tmp_path: Path) -> None:
    s = Store(tmp_path / "db")
    s.add_link("tok", "wg0", "K1", expires=100.0)
    s.add_link("old", "wg0", "K1", expires=10.0)
    assert s.peek_link("tok", 50) == ("wg0", "K1")
    assert s.peek_link("tok", 50) == ("wg0", "K1")  # looking does not use it up
    assert s.take_link("old", 50) is None  # expired
    assert s.take_link("tok", 50) == ("wg0", "K1")
    assert s.take_link("tok", 50) is None  # once
    assert s.peek_link("tok", 50) is None
    # Only digests are stored.
    rows = s.db.execute("SELECT digest FROM links").fetchall()
    assert all("tok" not in r[0] for r in rows)
    s.close()


def test_change_log_is_bounded(tmp_path: Path) -> None:
    s = Store(tmp_path / "db", max_log=10)
    for i in range(25):
        s.log(float(i), "admin@127.0.0.1", f"change {i}")
    lines = s.log_lines()
    assert len(lines) == 10 and lines[0].message == "change 24" and lines[-1].message == "change 15"
    s.close()


def test_rates_and_counter_resets() -> None:
    samples = [Sample(0, 0, 0), Sample(10, 1000, 500), Sample(20, 3000, 500),
               Sample(30, 400, 100)]  # the device restarted
    assert rates(samples) == [Point(10, 100.0, 50.0), Point(20, 200.0, 0.0),
                              Point(30, 40.0, 10.0)]
    assert rates(samples[:1]) == []
    pts = [Point(float(i), float(i), 0.0) for i in range(10)]
    assert downsample(pts, 5) == [Point(1, 0.5, 0), Point(3, 2.5, 0), Point(5, 4.5, 0),
                                  Point(7, 6.5, 0), Point(9, 8.5, 0)]
    assert downsample(pts, 20) == pts
    assert human_bytes(100) == "100 B" and human_bytes(2048) == "2.00 KiB"
    assert human_ago(65) == "1 minute, 5 seconds ago" and human_ago(0.2) == "now"
