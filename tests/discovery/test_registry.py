"""The sans-IO registry: answers, negative answers, UPDATE authorisation, garbage."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dns.update
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wgpy.control.keys import Key
from wgpy.discovery import records
from wgpy.discovery.records import Names, NatKind
from wgpy.discovery.registry import PeerView, Registry, Snapshot, Source
from wgpy.discovery.update import build_update

NAMES = Names.for_zone("wg.example")
KA, KB, KC = bytes([1]) * 32, bytes([2]) * 32, bytes([3]) * 32
A_EP = ("10.201.0.2", 40000)
B_EP = ("fd00::2", 51820)
SNAP = Snapshot([
    PeerView(KA, A_EP, ("10.99.0.1/32",)),
    PeerView(KB, B_EP, ("10.99.0.2/32", "fd00:99::2/128")),
    PeerView(KC, None, ("10.99.0.0/24",)),  # no endpoint: not published
])
OUTSIDE = Source(ipaddress.ip_address("10.200.0.9"), 5353)
TUNNEL_A = Source(ipaddress.ip_address("10.99.0.1"), 5353, via_tunnel=True)


def ask(reg: Registry, name: str | dns.name.Name, rdtype: str, source: Source = OUTSIDE,
        now: float = 0.0, snap: Snapshot = SNAP) -> dns.message.Message:
    q = dns.message.make_query(name, rdtype)
    wire = reg.handle_wire(q.to_wire(), source, snap, now)
    assert wire is not None
    r = dns.message.from_wire(wire)
    assert r.id == q.id and r.flags & dns.flags.QR
    return r


def rrset(section: list[dns.rrset.RRset], name: dns.name.Name, t: str) -> list[str]:
    for rr in section:
        if rr.name == name and rr.rdtype == dns.rdatatype.from_text(t):
            return sorted(r.to_text() for r in rr)
    return []


@pytest.fixture
def reg() -> Registry:
    return Registry(NAMES, ttl=7, ns_addresses=[ipaddress.ip_address("10.200.0.2")])


def test_ptr_lists_peers_with_endpoints_only(reg: Registry) -> None:
    r = ask(reg, NAMES.service, "PTR")
    assert r.rcode() == dns.rcode.NOERROR and r.flags & dns.flags.AA
    assert rrset(r.answer, NAMES.service, "PTR") == sorted(
        [NAMES.instance(KA).to_text(), NAMES.instance(KB).to_text()])
    assert r.answer[0].ttl == 7


def test_srv_with_address_and_txt_in_additional(reg: Registry) -> None:
    r = ask(reg, NAMES.instance(KA), "SRV")
    assert rrset(r.answer, NAMES.instance(KA), "SRV") == [f"0 0 40000 {NAMES.host(KA)}"]
    assert rrset(r.additional, NAMES.host(KA), "A") == ["10.201.0.2"]
    txt = rrset(r.additional, NAMES.instance(KA), "TXT")
    assert txt == [f'"txtvers=1" "pub={Key(KA).to_base64()}" "allowed=10.99.0.1/32"']
    # The wgsd client reads Answer[0] as SRV and Extra[0] as the address: keep that order.
    assert r.additional[0].rdtype == dns.rdatatype.A


def test_ipv6_endpoint_is_aaaa_and_a_is_nodata(reg: Registry) -> None:
    r = ask(reg, NAMES.host(KB), "AAAA")
    assert rrset(r.answer, NAMES.host(KB), "AAAA") == ["fd00::2"]
    r = ask(reg, NAMES.host(KB), "A")
    assert r.rcode() == dns.rcode.NOERROR and not r.answer
    assert r.authority[0].rdtype == dns.rdatatype.SOA


def test_key_labels_match_case_insensitively_with_or_without_padding(reg: Registry) -> None:
    label = records.key_to_label(KA)
    for variant in (label.lower(), label.rstrip("="), label.swapcase()):
        name = f"{variant}._wireguard._udp.wg.example."
        r = ask(reg, name, "SRV")
        assert r.rcode() == dns.rcode.NOERROR and r.answer, variant
        assert r.answer[0].name == dns.name.from_text(name)  # owner echoes the query


@pytest.mark.parametrize("name", [
    lambda: NAMES.instance(KC),  # in the device, but no endpoint
    lambda: NAMES.instance(bytes(32)),  # not a peer
    lambda: dns.name.from_text("nokey._wireguard._udp.wg.example."),
    lambda: dns.name.from_text("x.y.wg.example."),
    lambda: NAMES.lan_instance(KA),  # no LAN candidates published
])
def test_nxdomain_with_soa(reg: Registry, name: Callable[[], dns.name.Name]) -> None:
    qname = name()
    r = ask(reg, qname, "SRV")
    assert r.rcode() == dns.rcode.NXDOMAIN and r.flags & dns.flags.AA
    assert rrset(r.authority, NAMES.zone, "SOA")


@pytest.mark.parametrize("name,rdtype", [
    ("_udp.wg.example.", "A"), ("_wireguard._udp.wg.example.", "SRV"),
    ("wg.example.", "A"), ("lan.wg.example.", "TXT"),
])
def test_nodata_with_soa(reg: Registry, name: str, rdtype: str) -> None:
    r = ask(reg, name, rdtype)
    assert r.rcode() == dns.rcode.NOERROR and not r.answer
    soa = rrset(r.authority, NAMES.zone, "SOA")
    assert soa and soa[0].endswith(" 7")  # negative TTL = --ttl


def test_apex_soa_ns_and_glue(reg: Registry) -> None:
    r = ask(reg, "wg.example.", "NS")
    assert rrset(r.answer, NAMES.zone, "NS") == ["ns1.wg.example."]
    assert rrset(r.additional, NAMES.ns_host, "A") == ["10.200.0.2"]
    r = ask(reg, "WG.Example.", "SOA")
    assert r.answer and r.answer[0].rdtype == dns.rdatatype.SOA


def test_soa_serial_moves_when_the_data_changes_at_most_once_per_interval() -> None:
    reg = Registry(NAMES, serial=1_700_000_000, serial_interval=2.0)

    def serial() -> int:
        r = ask(reg, "wg.example.", "SOA")
        return int(r.answer[0][0].serial)

    assert reg.observe(SNAP, 10.0) == 1_700_000_000  # the first version keeps the start
    assert reg.observe(SNAP, 20.0) is None and serial() == 1_700_000_000
    moved = Snapshot([PeerView(KA, (A_EP[0], 40001), ("10.99.0.1/32",))])
    assert reg.observe(moved, 21.0) == 1_700_000_001
    back = Snapshot([PeerView(KA, (A_EP[0], 40002), ("10.99.0.1/32",))])
    assert reg.observe(back, 22.0) is None  # too soon: folded into the next version
    assert reg.journal.pending and serial() == 1_700_000_001
    assert reg.observe(back, 23.0) == 1_700_000_002 and serial() == 1_700_000_002


def test_peers_listed_in_another_order_are_no_change() -> None:
    # wireguard-go lists its peers in a new order on every get (a Go map).
    reg = Registry(NAMES, serial=1_700_000_000, serial_interval=1.0)
    shuffled = Snapshot([PeerView(p.public_key, p.endpoint, tuple(reversed(p.allowed_ips)))
                         for p in reversed(SNAP.peers)])
    assert reg.observe(SNAP, 10.0) == 1_700_000_000
    assert reg.observe(shuffled, 20.0) is None and not reg.journal.pending


def test_outside_zone_refused_not_authoritative(reg: Registry) -> None:
    r = ask(reg, "example.com.", "A")
    assert r.rcode() == dns.rcode.REFUSED and not r.flags & dns.flags.AA


def test_whoami_reports_the_source(reg: Registry) -> None:
    r = ask(reg, NAMES.whoami, "TXT")
    assert rrset(r.answer, NAMES.whoami, "TXT") == ['"addr=10.200.0.9" "port=5353"']
    assert r.answer[0].ttl == 0


def test_any_returns_every_type(reg: Registry) -> None:
    r = ask(reg, NAMES.instance(KA), "ANY")
    assert {rr.rdtype for rr in r.answer} == {dns.rdatatype.SRV, dns.rdatatype.TXT}


def test_self_peer_is_published(reg: Registry) -> None:
    me = bytes([9]) * 32
    snap = Snapshot(SNAP.peers, PeerView(me, ("10.200.0.2", 51820)))
    r = ask(reg, NAMES.instance(me), "SRV", snap=snap)
    assert rrset(r.answer, NAMES.instance(me), "SRV") == [f"0 0 51820 {NAMES.host(me)}"]


def test_large_ptr_set_truncates_over_udp_not_tcp(reg: Registry) -> None:
    many = Snapshot([PeerView(bytes([i]) * 31 + b"\x01", A_EP, ()) for i in range(40)])
    r = ask(reg, NAMES.service, "PTR", snap=many)
    assert r.flags & dns.flags.TC and not r.answer
    q = dns.message.make_query(NAMES.service, "PTR")
    tcp = Source(OUTSIDE.ip, 1, transport="tcp")
    wire = reg.handle_wire(q.to_wire(), tcp, many, 0.0)
    assert wire is not None and len(dns.message.from_wire(wire).answer[0]) == 40


# -- UPDATE -------------------------------------------------------------------------


def update(reg: Registry, msg: dns.message.Message, source: Source, now: float = 0.0,
           snap: Snapshot = SNAP) -> int:
    wire = reg.handle_wire(msg.to_wire(), source, snap, now)
    assert wire is not None
    return dns.message.from_wire(wire).rcode()


def lan_update(key: bytes = KA, addrs: tuple[str, ...] = ("192.168.1.10",),
               nat: NatKind | None = NatKind.CONE) -> dns.update.UpdateMessage:
    return build_update(NAMES, key, 51820, [ipaddress.ip_address(a) for a in addrs], nat, 30)


def test_update_through_tunnel_publishes_lan_candidates(reg: Registry) -> None:
    assert update(reg, lan_update(), TUNNEL_A) == dns.rcode.NOERROR
    r = ask(reg, NAMES.lan_instance(KA), "SRV")
    assert rrset(r.answer, NAMES.lan_instance(KA), "SRV") == [f"0 0 51820 {NAMES.lan_host(KA)}"]
    assert rrset(r.additional, NAMES.lan_host(KA), "A") == ["192.168.1.10"]
    assert rrset(ask(reg, NAMES.lan_service, "PTR").answer, NAMES.lan_service, "PTR") == [
        NAMES.lan_instance(KA).to_text()]
    txt = rrset(ask(reg, NAMES.instance(KA), "TXT").answer, NAMES.instance(KA), "TXT")
    assert txt[0].endswith('"nat=cone"')
    # A second update replaces, not merges.
    assert update(reg, lan_update(addrs=("192.168.7.7", "fd00:7::7")), TUNNEL_A) == 0
    r = ask(reg, NAMES.lan_host(KA), "ANY")
    assert {r2.to_text() for rr in r.answer for r2 in rr} == {"192.168.7.7", "fd00:7::7"}


@pytest.mark.parametrize("source,key", [
    (Source(ipaddress.ip_address("10.99.0.1"), 5353, via_tunnel=False), KA),  # not via tunnel
    (TUNNEL_A, KB),  # someone else's key
    (Source(ipaddress.ip_address("10.99.0.7"), 5353, via_tunnel=True), KA),  # KC's range
    (Source(ipaddress.ip_address("10.99.0.1"), 5353, False, "tcp"), KA),  # TCP, not tunnel
])
def test_update_refused_unless_source_routes_to_the_key(
    reg: Registry, source: Source, key: bytes
) -> None:
    assert update(reg, lan_update(key), source) == dns.rcode.REFUSED
    assert reg.last_refusal
    assert ask(reg, NAMES.lan_instance(key), "SRV").rcode() == dns.rcode.NXDOMAIN


def test_longest_prefix_decides_the_owner(reg: Registry) -> None:
    # 10.99.0.1 is in KC's /24 and KA's /32: WireGuard routes it to KA, so does the registry.
    assert update(reg, lan_update(KC), TUNNEL_A) == dns.rcode.REFUSED
    assert update(reg, lan_update(KA), TUNNEL_A) == dns.rcode.NOERROR


def test_update_validation(reg: Registry) -> None:
    bad_type = dns.update.UpdateMessage(NAMES.zone)
    bad_type.add(NAMES.lan_host(KA), 30, "TXT", '"x"')
    assert update(reg, bad_type, TUNNEL_A) == dns.rcode.REFUSED
    main_records = dns.update.UpdateMessage(NAMES.zone)
    main_records.add(NAMES.host(KA), 30, "A", "10.1.1.1")  # the NAT mapping is not writable
    assert update(reg, main_records, TUNNEL_A) == dns.rcode.REFUSED
    other_zone = dns.update.UpdateMessage("example.com.")
    other_zone.add("x.example.com.", 30, "A", "10.1.1.1")
    assert update(reg, other_zone, TUNNEL_A) == dns.rcode.NOTAUTH
    outside = dns.update.UpdateMessage(NAMES.zone)
    outside.add("x.example.com.", 30, "A", "10.1.1.1")
    assert update(reg, outside, TUNNEL_A) == dns.rcode.NOTZONE
    assert update(reg, lan_update(addrs=("127.0.0.1",)), TUNNEL_A) == dns.rcode.REFUSED
    assert update(reg, lan_update(addrs=tuple(f"192.168.1.{i}" for i in range(1, 10))),
                  TUNNEL_A) == dns.rcode.REFUSED
    wrong_target = dns.update.UpdateMessage(NAMES.zone)
    wrong_target.add(NAMES.lan_instance(KA), 30, "SRV", f"0 0 1 {NAMES.lan_host(KB)}")
    assert update(reg, wrong_target, TUNNEL_A) == dns.rcode.REFUSED
    assert reg.lan == {}


def test_lan_candidates_expire_and_vanish_with_the_peer(reg: Registry) -> None:
    reg.lease = 10
    assert update(reg, lan_update(), TUNNEL_A, now=100.0) == 0
    assert ask(reg, NAMES.lan_instance(KA), "SRV", now=109.0).answer
    assert ask(reg, NAMES.lan_instance(KA), "SRV", now=110.0).rcode() == dns.rcode.NXDOMAIN
    assert update(reg, lan_update(), TUNNEL_A, now=200.0) == 0
    gone = Snapshot([p for p in SNAP.peers if p.public_key != KA])
    ask(reg, NAMES.service, "PTR", now=201.0, snap=gone)
    assert KA not in reg.lan


# -- garbage ------------------------------------------------------------------------


def test_garbage_is_formerr_or_dropped(reg: Registry) -> None:
    assert reg.handle_wire(b"", OUTSIDE, SNAP, 0.0) is None
    assert reg.handle_wire(b"\x12\x34", OUTSIDE, SNAP, 0.0) is None
    header = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00"
    wire = reg.handle_wire(header + b"\x05abc", OUTSIDE, SNAP, 0.0)
    assert wire is not None
    r = dns.message.from_wire(wire)
    assert r.id == 0x1234 and r.rcode() == dns.rcode.FORMERR and r.flags & dns.flags.RD
    # A response is never answered (no reflection loops).
    resp = dns.message.make_response(dns.message.make_query("wg.example.", "SOA"))
    assert reg.handle_wire(resp.to_wire(), OUTSIDE, SNAP, 0.0) is None
    qr = header[:2] + b"\x81" + header[3:]  # QR set in the flags
    assert reg.handle_wire(qr + b"\x05abc", OUTSIDE, SNAP, 0.0) is None


def test_two_questions_formerr_and_other_opcodes_notimp(reg: Registry) -> None:
    q = dns.message.make_query("wg.example.", "SOA")
    q.question.append(q.question[0])
    wire = reg.handle_wire(q.to_wire(), OUTSIDE, SNAP, 0.0)
    assert wire and dns.message.from_wire(wire).rcode() == dns.rcode.FORMERR
    q = dns.message.make_query("wg.example.", "SOA")
    q.set_opcode(dns.opcode.STATUS)
    wire = reg.handle_wire(q.to_wire(), OUTSIDE, SNAP, 0.0)
    assert wire and dns.message.from_wire(wire).rcode() == dns.rcode.NOTIMP
    q = dns.message.make_query("wg.example.", "AXFR")
    wire = reg.handle_wire(q.to_wire(), OUTSIDE, SNAP, 0.0)
    assert wire and dns.message.from_wire(wire).rcode() == dns.rcode.REFUSED


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_never_raise(data: bytes) -> None:
    reg = Registry(NAMES)
    out = reg.handle_wire(data, TUNNEL_A, SNAP, 0.0)
    assert out is None or len(out) >= 12


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 2**16 - 1), st.integers(0, 300), st.binary(max_size=40))
def test_mutated_queries_never_raise(pos: int, byte: int, tail: bytes) -> None:
    reg = Registry(NAMES)
    base = bytearray(lan_update().to_wire() if pos % 2 else
                     dns.message.make_query(NAMES.instance(KA), "SRV").to_wire())
    if byte < 256:
        base[pos % len(base)] = byte
    out = reg.handle_wire(bytes(base) + tail, TUNNEL_A, SNAP, 0.0)
    if out is not None:
        dns.message.from_wire(out)  # whatever we send is well-formed
