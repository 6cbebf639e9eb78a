"""Address allocation: the lowest free host of each family's prefix."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wgpy.ui.pool import Pool, PoolError


def test_first_client_skips_network_and_server() -> None:
    assert Pool.from_addresses("wg0", ["10.8.0.1/24"]).allocate([]) == ["10.8.0.2/32"]


def test_taken_addresses_and_both_families() -> None:
    pool = Pool.from_addresses("wg0", ["10.8.0.1/24", "fd00:8::1/64"])
    used = ["10.8.0.2/32", "10.8.0.3/32", "10.8.0.5/32", "fd00:8::2/128"]
    assert pool.allocate(used) == ["10.8.0.4/32", "fd00:8::3/128"]


def test_a_routed_subnet_inside_the_pool_is_taken_a_wider_route_is_not() -> None:
    pool = Pool.from_addresses("wg0", ["10.8.0.1/24"])
    assert pool.allocate(["10.8.0.0/30"]) == ["10.8.0.4/32"]
    # A site routed as 10.0.0.0/8 does not take the pool: a /32 is more specific.
    assert pool.allocate(["10.0.0.0/8", "0.0.0.0/0"]) == ["10.8.0.2/32"]


def test_server_address_in_the_middle() -> None:
    pool = Pool.from_addresses("wg0", ["10.8.0.2/29"])
    assert pool.allocate([]) == ["10.8.0.1/32"]
    assert pool.allocate(["10.8.0.1/32"]) == ["10.8.0.3/32"]


def test_full_pool_is_a_clear_error() -> None:
    pool = Pool.from_addresses("wg0", ["10.8.0.1/29"])  # hosts .1-.6, .1 is the server
    used = [f"10.8.0.{i}/32" for i in range(2, 7)]
    with pytest.raises(PoolError, match=r"the address pool 10.8.0.0/29 of wg0 is full"):
        pool.allocate(used)


def test_no_room_or_no_address() -> None:
    with pytest.raises(PoolError, match="leaves no room for clients"):
        Pool.from_addresses("wg0", ["10.8.0.1/32"]).allocate([])
    with pytest.raises(PoolError, match="has no Address"):
        Pool.from_addresses("wg0", []).allocate([])


def test_ipv6_only() -> None:
    assert Pool.from_addresses("wg0", ["fd00::1/120"]).allocate(["fd00::2/128"]) == [
        "fd00::3/128"]


@given(st.sets(st.integers(1, 62), max_size=62), st.integers(1, 62))
def test_allocation_is_the_lowest_free_host(taken: set[int], server: int) -> None:
    pool = Pool.from_addresses("wg0", [f"10.9.0.{server}/26"])
    used = [f"10.9.0.{i}/32" for i in taken]
    free = sorted(set(range(1, 63)) - taken - {server})
    if not free:
        with pytest.raises(PoolError):
            pool.allocate(used)
        return
    [got] = pool.allocate(used)
    assert ipaddress.ip_interface(got).ip == ipaddress.ip_address(f"10.9.0.{free[0]}")
