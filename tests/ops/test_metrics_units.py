"""The exporter's pieces without a network: friendly names, the families, the
``--metrics`` address parser and the scrape-thread snapshot."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest
from prometheus_client.core import Metric

from wgpy.control.uapi import DeviceInfo, PeerInfo
from wgpy.protocol.errors import ConfigError
from wgpy.service.metrics import listen_address, on_loop
from wgpy.tools.device_metrics import (
    NameFile,
    Reading,
    mdlayher_families,
    mindflavor_families,
    parse_friendly_names,
    wgpy_families,
)

ALICE = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg="
BOB = "TrMvSoP4jYQlY6RIzBgbssQqY3vxI2Pi+y71lOWWXX0="

CONF = f"""\
[Interface]
PrivateKey = yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=
# friendly_name = not a peer: ignored

[Peer]
# friendly_name = alice's "laptop"
PublicKey = {ALICE}
AllowedIPs = 10.99.0.1/32

[Peer]
PublicKey = {BOB}   # no name
AllowedIPs = 10.99.0.2/32
"""


def test_friendly_names_come_from_comments_in_each_peer_section() -> None:
    assert parse_friendly_names(CONF, "wg0.conf") == {ALICE: 'alice\'s "laptop"'}


def test_a_named_section_without_a_key_names_file_and_line() -> None:
    with pytest.raises(ConfigError) as e:
        parse_friendly_names("[Peer]\n# friendly_name = x\nAllowedIPs = 1.2.3.4/32\n", "a.conf")
    assert str(e.value) == "a.conf:1: a friendly_name in a [Peer] section without PublicKey"
    with pytest.raises(ConfigError, match="a.conf:3: .*not a valid key"):
        parse_friendly_names("\n\n[Peer]\n# friendly_name = x\nPublicKey = nope\n", "a.conf")


def test_a_name_file_keeps_its_last_good_names(tmp_path: Path) -> None:
    f = tmp_path / "wg0.conf"
    with pytest.raises(ConfigError, match="No such file"):
        NameFile(f).load()
    f.write_text(CONF)
    nf = NameFile(f)
    assert nf.load() == {ALICE: 'alice\'s "laptop"'}
    f.write_text("[Peer]\n# friendly_name = broken\n")
    assert nf.load() == {ALICE: 'alice\'s "laptop"'}  # logged, not raised


def _samples(fams: list[Metric], name: str) -> list[tuple[dict[str, str], float]]:
    return [(s.labels, s.value) for f in fams for s in f.samples if s.name == name]


def _reading() -> Reading:
    from wgpy.control.keys import Key

    peers = [PeerInfo(Key.from_base64(ALICE).raw, endpoint="192.168.1.2:51820", rx_bytes=10,
                      tx_bytes=20, last_handshake_time_sec=1_700_000_000,
                      allowed_ips=["10.99.0.1/32", "fd00::1/128"]),
             PeerInfo(Key.from_base64(BOB).raw)]
    return Reading("wg0", DeviceInfo(private_key=None, listen_port=51820, peers=peers),
                   {"handshakes_completed": 3, "under_load_ms": 1500, "drop.REPLAYED": 2,
                    "send_error.EAGAIN": 1, "uapi.get": 4, "staged_packets": 5})


def test_mdlayher_family_and_labels() -> None:
    fams = list(mdlayher_families([_reading()], {ALICE: "alice"}))
    zero = "A" * 43 + "="
    assert _samples(fams, "wireguard_device_info") == [
        ({"device": "wg0", "public_key": zero}, 1.0)]
    assert ({"device": "wg0", "public_key": ALICE, "endpoint": "192.168.1.2:51820",
             "name": "alice"}, 1.0) in _samples(fams, "wireguard_peer_info")
    assert ({"device": "wg0", "public_key": BOB, "endpoint": "", "name": ""}, 1.0) in \
        _samples(fams, "wireguard_peer_info")
    assert ({"device": "wg0", "public_key": ALICE, "allowed_ips": "fd00::1/128",
             "family": "IPv6"}, 1.0) in _samples(fams, "wireguard_peer_allowed_ips_info")
    assert ({"device": "wg0", "public_key": ALICE}, 10.0) in \
        _samples(fams, "wireguard_peer_receive_bytes_total")
    assert ({"device": "wg0", "public_key": ALICE}, 20.0) in \
        _samples(fams, "wireguard_peer_transmit_bytes_total")
    assert ({"device": "wg0", "public_key": BOB}, 0.0) in \
        _samples(fams, "wireguard_peer_last_handshake_seconds")


def test_mindflavor_family_carries_friendly_name_only_where_set() -> None:
    fams = list(mindflavor_families([_reading()], {ALICE: "alice"}))
    sent = _samples(fams, "wireguard_sent_bytes_total")
    assert ({"interface": "wg0", "public_key": ALICE,
             "allowed_ips": "10.99.0.1/32,fd00::1/128", "friendly_name": "alice"}, 20.0) in sent
    assert ({"interface": "wg0", "public_key": BOB, "allowed_ips": "(none)"}, 0.0) in sent
    assert ({"interface": "wg0", "public_key": ALICE,
             "allowed_ips": "10.99.0.1/32,fd00::1/128", "friendly_name": "alice"},
            1_700_000_000.0) in _samples(fams, "wireguard_latest_handshake_seconds")


def test_wgpy_families_from_the_stats_fields() -> None:
    fams = list(wgpy_families([_reading(), Reading("wg1", DeviceInfo(), None)]))
    assert _samples(fams, "wgpy_device_handshakes_completed_total") == [({"device": "wg0"}, 3.0)]
    assert _samples(fams, "wgpy_device_under_load_seconds_total") == [({"device": "wg0"}, 1.5)]
    assert _samples(fams, "wgpy_device_dropped_total") == [
        ({"device": "wg0", "reason": "replayed"}, 2.0)]
    assert _samples(fams, "wgpy_device_send_errors_total") == [
        ({"device": "wg0", "errno": "EAGAIN"}, 1.0)]
    uapi = _samples(fams, "wgpy_device_uapi_requests_total")
    assert ({"device": "wg0", "op": "get"}, 4.0) in uapi
    assert _samples(fams, "wgpy_device_staged_packets") == [({"device": "wg0"}, 5.0)]


def test_metrics_addresses() -> None:
    assert listen_address("127.0.0.1:9586") == ("127.0.0.1", 9586)
    assert listen_address(":9586") == ("0.0.0.0", 9586)
    assert listen_address("[::1]:9") == ("::1", 9)
    for bad in ("9586", "1.2.3.4:0", "1.2.3.4:x", "[::1]"):
        with pytest.raises(ValueError, match=repr(bad).replace("[", r"\[")):
            listen_address(bad)


def test_on_loop_runs_on_the_loop_thread_and_times_out() -> None:
    loop = asyncio.new_event_loop()
    t = threading.Thread(target=loop.run_forever, daemon=True)
    t.start()
    try:
        assert on_loop(loop, threading.get_ident) == t.ident
        with pytest.raises(ZeroDivisionError):
            on_loop(loop, lambda: 1 // 0)
        loop.call_soon_threadsafe(lambda: __import__("time").sleep(0.5))
        with pytest.raises(TimeoutError, match="did not answer"):
            on_loop(loop, lambda: 1, timeout=0.1)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        t.join(5)
        loop.close()


def test_path_kinds_from_discovers_state() -> None:
    from wgpy.discovery.metrics import PathBook, path_kind
    from wgpy.discovery.paths import Candidate, Observed, Origin, PathSelector

    nat = Candidate(("198.51.100.2", 51820), Origin.NAT)
    lan = Candidate(("192.168.1.20", 51820), Origin.LAN)
    sel = PathSelector(stale_after=15.0)
    cands = [nat, lan]
    # No traffic yet: none, whatever the endpoint.
    obs = Observed(nat.text, rx_bytes=0)
    sel.step(0.0, obs, cands)
    assert path_kind(sel, 0.0, obs, cands) == "none"
    # Traffic flows on the LAN candidate, then on the NAT mapping, then on an
    # endpoint learned by roaming.
    for t, ep, rx, want in ((1.0, lan.text, 100, "lan"), (2.0, nat.text, 200, "direct"),
                            (3.0, "203.0.113.9:4000", 300, "direct")):
        obs = Observed(ep, rx_bytes=rx)
        sel.step(t, obs, cands)
        assert path_kind(sel, t, obs, cands) == want
    # Silence for longer than stale_after: none again.
    assert path_kind(sel, 30.0, Observed(nat.text, rx_bytes=300), cands) == "none"
    # Traffic through the relay allocation discover was given is "relayed".
    relay = Candidate(("10.200.0.2", 40000), Origin.RELAY)
    obs = Observed(relay.text, rx_bytes=400)
    sel.step(31.0, obs, cands, relay)
    assert path_kind(sel, 31.0, obs, cands, relay) == "relayed"
    book = PathBook()
    book.observe(b"k" * 32, "none", None, 0.0)
    book.observe(b"k" * 32, "direct", nat.text, 5.0)
    book.observe(b"k" * 32, "direct", "203.0.113.9:4000", 9.0)  # same kind: since stays
    assert book.paths[b"k" * 32].since == 5.0 and book.changes["direct"] == 1


def test_registry_families_carry_the_relay_transfer_notify_and_tsig_counters() -> None:
    # The keys as Server.counters() (the SIGUSR1 line) has them.
    from wgpy.discovery.metrics import RegistrySnapshot, registry_families

    counters = {
        "messages": 40, "serial": 7, "update.refused": 2, "relay.refused": 1,
        "relay.dropped": 1, "xfr.refused": 3, "notify.refused": 4, "tsig.badsig": 2,
        "tsig.dropped": 1, "xfr.axfr.requests": 2, "xfr.axfr.full": 2,
        "xfr.ixfr.requests": 5, "xfr.ixfr.incremental": 4, "xfr.ixfr.full": 1,
        "notify.sent": 6, "notify.acknowledged": 5, "notify.gave_up": 1,
        "relay.allocations": 1, "relay.allocated": 2, "relay.expired": 1,
        "relay.forwarded.datagrams": 900, "relay.forwarded.bytes": 123456,
        "relay.drop.foreign_source": 3, "relay.send_error.EPERM": 1,
        "relay.requests": 2, "relay.mapping.changed": 1,
    }
    samples = {
        (s.name, tuple(sorted((k, v) for k, v in s.labels.items() if k != "zone"))): s.value
        for fam in registry_families("wg.example.net", RegistrySnapshot(counters, 2, 2, 0, True))
        for s in fam.samples
    }

    def get(name: str, **labels: str) -> float:
        return samples[(name, tuple(sorted(labels.items())))]

    assert get("wgpy_registry_serial") == 7
    assert get("wgpy_registry_refused_total", kind="xfr") == 3
    assert get("wgpy_registry_refused_total", kind="notify") == 4
    assert get("wgpy_registry_refused_total", kind="relay") == 1
    assert get("wgpy_registry_rate_limited_total", kind="tsig") == 1
    assert get("wgpy_registry_tsig_errors_total", error="badsig") == 2
    assert ("wgpy_registry_tsig_errors_total", (("error", "dropped"),)) not in samples
    assert get("wgpy_registry_transfer_requests_total", type="ixfr") == 5
    assert get("wgpy_registry_transfers_total", type="ixfr", form="incremental") == 4
    assert get("wgpy_registry_transfers_total", type="axfr", form="full") == 2
    assert get("wgpy_registry_notify_total", event="gave_up") == 1
    assert get("wgpy_registry_relay_allocations") == 1
    assert get("wgpy_registry_relay_forwarded_bytes_total") == 123456
    assert get("wgpy_registry_relay_forwarded_datagrams_total") == 900
    assert get("wgpy_registry_relay_dropped_total", reason="foreign_source") == 3
    assert get("wgpy_registry_relay_send_errors_total", errno="EPERM") == 1
    assert get("wgpy_registry_relay_events_total", event="mapping.changed") == 1
    assert get("wgpy_registry_relay_events_total", event="requests") == 2
    # Without --relay there is no relay family at all.
    no_relay = {k: v for k, v in counters.items() if not k.startswith("relay.")}
    names = {f.name for f in registry_families("z", RegistrySnapshot(no_relay, 0, 0, 0, True))}
    assert not any(n.startswith("wgpy_registry_relay") for n in names)
