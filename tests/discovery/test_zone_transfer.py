"""Zone versions, AXFR/IXFR, TSIG and NOTIFY refusals in the sans-IO registry.

Transfers are read back with dnspython's own secondary-side machinery
(``dns.xfr.Inbound`` into a ``dns.versioned.Zone``), which checks their
structure as a secondary would.
"""

from __future__ import annotations

import base64
import ipaddress
import time
from unittest import mock

import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdatatype
import dns.rrset
import dns.tsig
import dns.versioned
import dns.xfr
import pytest

from wgpy.discovery.notify import NotifySchedule, Outcome
from wgpy.discovery.ratelog import Budget, LogLimiter
from wgpy.discovery.records import Names
from wgpy.discovery.registry import PeerView, Registry, Snapshot, Source
from wgpy.discovery.tsigkeys import parse_keyfile
from wgpy.discovery.update import build_update
from wgpy.protocol.errors import ConfigError

NAMES = Names.for_zone("wg.example")
KA, KB = bytes([1]) * 32, bytes([2]) * 32
SECRET = base64.b64encode(bytes(range(32))).decode()
KEYFILE = f'key "xfr" {{\n\talgorithm hmac-sha256;\n\tsecret "{SECRET}";\n}};\n'
KEYRING = parse_keyfile(KEYFILE)
KEY = KEYRING[dns.name.from_text("xfr")]
SECONDARY = Source(ipaddress.ip_address("10.203.0.2"), 4000, transport="tcp")
STRANGER = Source(ipaddress.ip_address("10.209.0.9"), 4000, transport="tcp")


def snap(port_a: int = 40000) -> Snapshot:
    return Snapshot([PeerView(KA, ("10.201.0.2", port_a), ("10.99.0.1/32",)),
                     PeerView(KB, ("10.202.0.2", 51820), ("10.99.0.2/32",))])


def registry(keyring: bool = True) -> Registry:
    reg = Registry(NAMES, ttl=5, ns_addresses=[ipaddress.ip_address("10.200.0.2")],
                   serial=1000, serial_interval=1.0,
                   transfer_acl=[ipaddress.ip_network("10.203.0.2/32")],
                   keyring=KEYRING if keyring else None,
                   probes=[("10.200.0.2", 53), ("10.200.0.2", 5353)])
    reg.observe(snap(), 0.0)
    return reg


def xfr_query(rdtype: str, serial: int | None = None, sign: bool = True) -> dns.message.Message:
    q = dns.message.make_query(NAMES.zone, rdtype)
    if serial is not None:
        soa = dns.rrset.from_text(NAMES.zone, 0, "IN", "SOA",
                                  f"ns1.wg.example. h.wg.example. {serial} 1 1 1 1")
        q.authority.append(soa)
    if sign:
        q.use_tsig(KEY)
    return q


def transfer(reg: Registry, q: dns.message.Message, source: Source = SECONDARY,
             s: Snapshot | None = None, now: float = 0.0) -> list[dns.message.Message]:
    wires = reg.handle_all(q.to_wire(), source, s or snap(), now)
    out: list[dns.message.Message] = []
    ctx = None
    for i, w in enumerate(wires):
        m = dns.message.from_wire(w, keyring=KEYRING if q.had_tsig else None,
                                  request_mac=q.mac if i == 0 else b"", xfr=True,
                                  origin=NAMES.zone, tsig_ctx=ctx, multi=len(wires) > 1)
        ctx = m.tsig_ctx
        out.append(m)
    return out


def load(zone: dns.versioned.Zone, q: dns.message.Message,
         msgs: list[dns.message.Message], serial: int | None = None) -> None:
    rdtype = dns.rdatatype.IXFR if serial is not None else dns.rdatatype.AXFR
    with dns.xfr.Inbound(zone, rdtype, serial) as inbound:
        done = False
        for m in msgs:
            done = inbound.process_message(m)
        assert done


def test_axfr_then_ixfr_follow_the_versions() -> None:
    reg = registry()
    q = xfr_query("AXFR")
    zone = dns.versioned.Zone(NAMES.zone)
    load(zone, q, transfer(reg, q))
    soa = zone.get_soa()
    assert soa.serial == 1000
    srv = zone.find_rdataset(NAMES.instance(KA), "SRV")
    assert [r.port for r in srv] == [40000]
    probes = zone.find_rdataset(NAMES.probe_service, "SRV")
    assert sorted(r.port for r in probes) == [53, 5353]
    assert zone.get_rdataset("_whoami", "TXT") is None  # depends on who asks: not transferred
    # A's endpoint changes: a new version; IXFR from 1000 carries only the difference.
    assert reg.observe(snap(40001), 5.0) == 1001
    q = xfr_query("IXFR", 1000)
    msgs = transfer(reg, q, s=snap(40001))
    answer = [rr for m in msgs for rr in m.answer]
    assert [rr.rdtype for rr in answer].count(dns.rdatatype.SOA) == 4  # one condensed step
    assert len(answer) <= 8, answer  # new SOA, old SOA, -SRV, SOA, +SRV, SOA
    load(zone, q, msgs, serial=1000)
    assert zone.get_soa().serial == 1001
    assert [r.port for r in zone.find_rdataset(NAMES.instance(KA), "SRV")] == [40001]
    # Up to date: the SOA alone.  Unknown old serial: the whole zone.
    msgs = transfer(reg, xfr_query("IXFR", 1001), s=snap(40001))
    assert [rr.rdtype for m in msgs for rr in m.answer] == [dns.rdatatype.SOA]
    msgs = transfer(reg, xfr_query("IXFR", 7), s=snap(40001))
    answer = [rr for m in msgs for rr in m.answer]
    assert answer[0].rdtype == answer[-1].rdtype == dns.rdatatype.SOA and len(answer) > 8
    assert reg.stats["xfr.ixfr.incremental"] == 1 and reg.stats["xfr.ixfr.full"] == 1


def test_a_large_zone_goes_in_several_signed_messages() -> None:
    reg = Registry(NAMES, serial=5, transfer_acl=[ipaddress.ip_network("10.203.0.0/24")],
                   keyring=KEYRING)
    big = Snapshot([PeerView(i.to_bytes(2, "big") * 16, ("10.201.0.2", 40000 + i),
                             (f"10.{i // 250}.{i % 250}.1/32",)) for i in range(1500)])
    reg.observe(big, 0.0)
    q = xfr_query("AXFR")
    msgs = transfer(reg, q, s=big)
    assert len(msgs) > 1 and all(m.had_tsig for m in msgs)
    zone = dns.versioned.Zone(NAMES.zone)
    load(zone, q, msgs)
    assert len(zone.find_rdataset(NAMES.service, "PTR")) == 1500


@pytest.mark.parametrize("source,query,rcode,why", [
    (STRANGER, lambda: xfr_query("AXFR"), dns.rcode.REFUSED, "not a listed secondary"),
    (SECONDARY, lambda: xfr_query("AXFR", sign=False), dns.rcode.REFUSED, "not signed"),
    (Source(SECONDARY.ip, 4000), lambda: xfr_query("AXFR"), dns.rcode.NOTIMP, "over UDP"),
    (SECONDARY, lambda: dns.message.make_query("other.example.", "AXFR"), dns.rcode.REFUSED,
     "not this zone"),
    (SECONDARY, lambda: xfr_query("IXFR"), dns.rcode.FORMERR, "without the client's SOA"),
])
def test_refused_transfers(source: Source, query: object, rcode: int, why: str) -> None:
    reg = registry()
    before = reg.journal.serial
    q = query()  # type: ignore[operator]
    wires = reg.handle_all(q.to_wire(), source, snap(), 0.0)
    assert len(wires) == 1
    r = dns.message.from_wire(wires[0], keyring=KEYRING, request_mac=q.mac)
    assert r.rcode() == rcode and not r.answer
    assert why in reg.last_refusal
    assert reg.stats["xfr.refused"] == 1 and reg.journal.serial == before


def test_ixfr_over_udp_gets_the_soa_alone() -> None:
    reg = registry(keyring=False)
    reg.transfer_acl = (ipaddress.ip_network("10.203.0.2/32"),)
    q = xfr_query("IXFR", 999, sign=False)
    wires = reg.handle_all(q.to_wire(), Source(SECONDARY.ip, 4000), snap(), 0.0)
    r = dns.message.from_wire(wires[0])
    assert [rr.rdtype for rr in r.answer] == [dns.rdatatype.SOA]


# -- TSIG failures -------------------------------------------------------------------


def tsig_error(reg: Registry, q: dns.message.Message) -> tuple[int, int]:
    wires = reg.handle_all(q.to_wire(), SECONDARY, snap(), 0.0, time.time())
    assert len(wires) == 1
    r = dns.message.from_wire(wires[0], keyring=lambda m, n: False)  # read, do not verify
    assert r.tsig is not None
    return r.rcode(), r.tsig[0].error


def test_tsig_failures_are_notauth_with_the_tsig_error_and_change_nothing() -> None:
    reg = registry()
    serial = reg.journal.serial
    wrong = dns.tsig.Key("xfr", base64.b64encode(b"x" * 32).decode(), dns.tsig.HMAC_SHA256)
    q = xfr_query("AXFR", sign=False)
    q.use_tsig(wrong)
    assert tsig_error(reg, q) == (dns.rcode.NOTAUTH, dns.rcode.BADSIG)
    q = xfr_query("AXFR", sign=False)
    q.use_tsig(dns.tsig.Key("nobody", SECRET, dns.tsig.HMAC_SHA256))
    assert tsig_error(reg, q) == (dns.rcode.NOTAUTH, dns.rcode.BADKEY)
    q = xfr_query("AXFR")
    with mock.patch("time.time", return_value=time.time() - 3600):
        wire = q.to_wire()  # signed an hour ago
    wires = reg.handle_all(wire, SECONDARY, snap(), 0.0, time.time())
    r = dns.message.from_wire(wires[0], keyring=lambda m, n: False)
    assert r.rcode() == dns.rcode.NOTAUTH and r.tsig is not None
    assert r.tsig[0].error == dns.rcode.BADTIME and len(r.tsig[0].mac) == 32  # signed
    assert reg.stats["tsig.badsig"] == reg.stats["tsig.badkey"] == reg.stats["tsig.badtime"] == 1
    assert reg.journal.serial == serial and not reg.lan


def test_a_signed_query_gets_a_signed_answer() -> None:
    reg = registry()
    q = dns.message.make_query(NAMES.instance(KA), "SRV")
    q.use_tsig(KEY)
    wire = reg.handle_wire(q.to_wire(), SECONDARY, snap(), 0.0)
    assert wire is not None
    r = dns.message.from_wire(wire, keyring=KEYRING, request_mac=q.mac)  # verifies
    assert r.had_tsig and r.answer


# -- NOTIFY --------------------------------------------------------------------------


def test_notify_to_the_primary_is_refused_then_dropped_and_logged_once() -> None:
    reg = Registry(NAMES, budget=Budget(rate=5, burst=5), log_window=10.0)
    answered = 0
    for i in range(50):
        q = dns.message.make_query(NAMES.zone, "SOA")
        q.set_opcode(dns.opcode.NOTIFY)
        wire = reg.handle_wire(q.to_wire(), STRANGER, snap(), 1.0 + i * 0.001)
        if wire is not None:
            assert dns.message.from_wire(wire).rcode() == dns.rcode.REFUSED
            answered += 1
    assert answered == 5
    assert reg.stats["notify.refused"] == 50 and reg.stats["notify.dropped"] == 45
    lines = reg.drain_logs()
    assert len(lines) == 1 and "NOTIFY" in lines[0][1]
    # The next window's first line says how many were held back.
    q = dns.message.make_query(NAMES.zone, "SOA")
    q.set_opcode(dns.opcode.NOTIFY)
    reg.handle_wire(q.to_wire(), STRANGER, snap(), 20.0)
    (line,) = reg.drain_logs()
    assert "and 49 more" in line[1]


def test_notify_message_is_signed_and_names_the_serial() -> None:
    reg = registry()
    msg = reg.notify_message(4242)
    r = dns.message.from_wire(msg.to_wire(), keyring=KEYRING)
    assert r.opcode() == dns.opcode.NOTIFY and r.flags & dns.flags.AA and r.had_tsig
    assert r.answer[0][0].serial == reg.journal.serial


def test_notify_schedule_retries_with_backoff_until_answered() -> None:
    sched = NotifySchedule([("10.203.0.2", 53), ("10.204.0.2", 53)], tries=3)
    sched.changed(7, 0.0)
    due = sched.due(0.0)
    assert len(due) == 2
    for i, t in enumerate(due):
        sched.sent(t, 100 + i, 0.0)
    assert sched.due(0.5) == [] and sched.next_deadline() == 1.0
    assert sched.answered(("10.203.0.2", 53), 100, ok=True) is Outcome.ACKNOWLEDGED
    assert sched.answered(("10.203.0.2", 53), 100, ok=True) is Outcome.STRAY
    assert sched.answered(("10.209.0.2", 53), 101, ok=True) is Outcome.STRAY
    (t,) = sched.due(1.0)
    sched.sent(t, 102, 1.0)
    (t,) = sched.due(3.0)  # waited 2 s this time
    sched.sent(t, 103, 3.0)
    assert sched.due(6.9) == []
    assert sched.due(7.0) == [] and sched.stats["gave_up"] == 1
    assert [g.endpoint for g in sched.drain_given_up()] == [("10.204.0.2", 53)]
    sched.changed(8, 10.0)  # a new serial starts over
    assert len(sched.due(10.0)) == 2


def test_log_limiter_and_budget() -> None:
    lim = LogLimiter(window=10)
    assert lim.line("x", "a", 0.0) == "a"
    assert lim.line("x", "b", 5.0) is None and lim.line("y", "c", 5.0) == "c"
    assert lim.line("x", "d", 10.0) == "d (and 1 more like it in the last 10s)"
    budget = Budget(rate=1, burst=2)
    assert [budget.allow("k", 0.0) for _ in range(3)] == [True, True, False]
    assert budget.allow("k", 1.0)


# -- key files -----------------------------------------------------------------------


def test_keyfile_as_tsig_keygen_writes_it() -> None:
    keys = parse_keyfile(KEYFILE + '# another\nkey "b.example." { algorithm HMAC-SHA512; '
                         f'secret "{SECRET}"; }};\n')
    assert [k.to_text() for k in keys] == ["xfr.", "b.example."]
    assert keys[dns.name.from_text("b.example")].algorithm == dns.tsig.HMAC_SHA512


@pytest.mark.parametrize("text,needle", [
    ("", "no key statement"),
    ('key "a" { algorithm hmac-md5; secret "AAAA"; };', "unsupported algorithm"),
    ('key "a" { algorithm hmac-sha256; secret "!!"; };', "not base64"),
    ('key "a" { algorithm hmac-sha256; secret "AAAA"; };', "shorter than 16"),
    ('key "a" { algorithm hmac-sha256; };', "needs an algorithm and a secret"),
    ('key "a" {\n algorithm hmac-sha256;\n bogus 1;\n};', ":3: unknown key option"),
    (f'key "a" {{ algorithm hmac-sha256; secret "{SECRET}"; }}', "end of file"),
])
def test_bad_keyfiles_name_file_and_line(text: str, needle: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_keyfile(text, "/etc/wgpy/xfr.key")
    assert needle in str(e.value) and str(e.value).startswith("/etc/wgpy/xfr.key")


# -- signed UPDATEs ------------------------------------------------------------------


def test_update_tsig_needs_the_tunnel_and_a_signature() -> None:
    reg = Registry(NAMES, keyring=KEYRING, update_needs_tsig=True)
    reg.observe(snap(), 0.0)
    via_tunnel = Source(ipaddress.ip_address("10.99.0.1"), 5353, via_tunnel=True)
    outside = Source(ipaddress.ip_address("10.201.0.2"), 5353)

    def update(source: Source, key: dns.tsig.Key | None, addr: str) -> int:
        msg = build_update(NAMES, KA, 51820, [ipaddress.ip_address(addr)], None, 30)
        if key is not None:
            msg.use_tsig(key)
        wire = reg.handle_wire(msg.to_wire(), source, snap(), 0.0)
        assert wire is not None
        return dns.message.from_wire(wire, keyring=lambda m, n: False).rcode()

    wrong = dns.tsig.Key("xfr", base64.b64encode(b"x" * 32).decode(), dns.tsig.HMAC_SHA256)
    assert update(via_tunnel, None, "192.168.1.10") == dns.rcode.REFUSED
    assert update(via_tunnel, wrong, "192.168.1.11") == dns.rcode.NOTAUTH
    assert update(outside, KEY, "192.168.1.12") == dns.rcode.REFUSED
    assert not reg.lan and reg.stats["updates.accepted"] == 0
    assert reg.stats["update.refused"] == 2 and reg.stats["tsig.badsig"] == 1
    assert update(via_tunnel, KEY, "192.168.1.13") == dns.rcode.NOERROR
    assert [str(a) for a in reg.lan[KA].addresses] == ["192.168.1.13"]


def test_update_tsig_needs_a_keyring() -> None:
    with pytest.raises(ValueError):
        Registry(NAMES, update_needs_tsig=True)
