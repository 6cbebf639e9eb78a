"""control.endpoint: the one HOST:PORT parser, in its three strictnesses."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wgpy.control.endpoint import format_endpoint, parse_endpoint, split_host_port


@given(
    st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=6)),
    st.integers(min_value=1, max_value=65535),
)
def test_format_then_parse_round_trips(ip: ipaddress.IPv4Address, port: int) -> None:
    text = format_endpoint(str(ip), port)
    assert parse_endpoint(text) == (str(ip), port)


@pytest.mark.parametrize(
    "text",
    ["", "1.2.3.4", "1.2.3.4:", "1.2.3.4:0", "1.2.3.4:65536", "1.2.3.4:x", "fd00::1:80",
     "[fd00::1]", "[fd00::1]:", "[fd00::1:80", "[1.2.3.4]:80", "1.2.3:80", "1.2.3.4:²",
     "1.2.3.4:" + "9" * 5000],
)
def test_uapi_form_refuses(text: str) -> None:
    with pytest.raises(ValueError) as ei:
        parse_endpoint(text)
    assert len(str(ei.value)) < 120  # a long input is not echoed whole


def test_wg_split_takes_the_last_colon_and_keeps_names() -> None:
    assert split_host_port("example.org:51820") == ("example.org", "51820")
    assert split_host_port("fd00::1:51820") == ("fd00::1", "51820")
    assert split_host_port("[fd00::1]:51820") == ("fd00::1", "51820")
    with pytest.raises(ValueError, match="Unable to find port"):
        split_host_port("example.org")
    with pytest.raises(ValueError, match="matching brace"):
        split_host_port("[fd00::1")


def test_port_optional_form() -> None:
    assert split_host_port("10.0.0.2", port_optional=True) == ("10.0.0.2", "")
    assert split_host_port("10.0.0.2:80", port_optional=True) == ("10.0.0.2", "80")
    assert split_host_port("fd00::2", port_optional=True) == ("fd00::2", "")
    assert split_host_port("[fd00::2]", port_optional=True) == ("fd00::2", "")
    assert split_host_port("[fd00::2]:80", port_optional=True) == ("fd00::2", "80")
