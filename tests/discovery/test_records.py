"""Names, key labels, TXT parsing and client-side response parsing."""

from __future__ import annotations

import base64

import dns.message
import dns.name
import dns.rrset
import pytest
from hypothesis import given
from hypothesis import strategies as st

from wgpy.control.endpoint import format_endpoint
from wgpy.discovery import records
from wgpy.discovery.records import Kind, Names

NAMES = Names.for_zone("wg.example.")


@given(st.binary(min_size=32, max_size=32))
def test_key_label_round_trip_any_case(key: bytes) -> None:
    label = records.key_to_label(key)
    assert len(label) == records.LABEL_LEN and label.endswith("====")
    assert records.label_to_key(label) == key
    assert records.label_to_key(label.lower()) == key
    assert records.label_to_key(label.rstrip("=")) == key


def test_label_matches_the_coreutils_example_from_the_wgsd_article() -> None:
    # `cat pub.txt | base64 -d | base32` in the wgsd article.
    key = base64.b64decode("O9rAAiO5qTejOEtFbsQhCl745ovoM9coTGiprFTaHUE=")
    assert records.key_to_label(key) == "HPNMAARDXGUTPIZYJNCW5RBBBJPPRZUL5AZ5OKCMNCU2YVG2DVAQ===="


@pytest.mark.parametrize("label", [
    "", "abc", "A" * 55, "A" * 57, "1" * 52,  # '1' is not base32
    "HPNMAARDXGUTPIZYJNCW5RBBBJPPRZUL5AZ5OKCMNCU2YVG2DVAR",  # non-canonical trailing bits
])
def test_bad_labels_are_not_keys(label: str) -> None:
    assert records.label_to_key(label) is None


def test_classify() -> None:
    k = bytes(range(32))
    assert NAMES.classify(NAMES.instance(k)) == (Kind.INSTANCE, k)
    assert NAMES.classify(NAMES.host(k)) == (Kind.HOST, k)
    assert NAMES.classify(NAMES.lan_instance(k)) == (Kind.LAN_INSTANCE, k)
    assert NAMES.classify(NAMES.lan_host(k)) == (Kind.LAN_HOST, k)
    assert NAMES.classify(NAMES.service)[0] is Kind.SERVICE
    assert NAMES.classify(dns.name.from_text("_WireGuard._UDP.WG.example."))[0] is Kind.SERVICE
    assert NAMES.classify(dns.name.from_text("wg.example."))[0] is Kind.APEX
    assert NAMES.classify(dns.name.from_text("ns1.wg.example."))[0] is Kind.NS_HOST
    assert NAMES.classify(dns.name.from_text("example."))[0] is Kind.OUTSIDE
    assert NAMES.classify(dns.name.from_text("a.b.wg.example."))[0] is Kind.UNKNOWN
    x = dns.name.Name((b"x",)).concatenate(NAMES.host(k))
    assert NAMES.classify(x)[0] is Kind.UNKNOWN


@pytest.mark.parametrize("zone", ["", ".", "a..b", "x" * 64 + ".com"])
def test_bad_zone(zone: str) -> None:
    with pytest.raises(ValueError):
        Names.for_zone(zone)


def test_parse_txt_first_wins_and_keys_fold_case() -> None:
    assert records.parse_txt([b"TxtVers=1", b"pub=a=b", b"pub=x", b"flag", b"=v"]) == {
        "txtvers": "1", "pub": "a=b", "flag": ""}


def test_endpoints_from_srv_response_orders_by_priority() -> None:
    q = dns.message.make_query(NAMES.instance(bytes(32)), "SRV")
    r = dns.message.make_response(q)
    inst = NAMES.instance(bytes(32))
    r.answer.append(dns.rrset.from_text(inst, 5, "IN", "SRV", "10 0 2 b.wg.example.",
                                        "0 0 1 a.wg.example."))
    r.additional.append(dns.rrset.from_text("a.wg.example.", 5, "IN", "A", "10.0.0.1"))
    r.additional.append(dns.rrset.from_text("b.wg.example.", 5, "IN", "AAAA", "fd00::1"))
    r.additional.append(dns.rrset.from_text("c.wg.example.", 5, "IN", "A", "10.9.9.9"))
    eps = records.endpoints_from_srv_response(r, inst)
    assert eps == [("10.0.0.1", 1), ("fd00::1", 2)]
    assert format_endpoint(*eps[1]) == "[fd00::1]:2"
    assert records.endpoints_from_srv_response(r, NAMES.service) == []
