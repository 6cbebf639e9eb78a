"""Address allocation for new clients (pure).

The pool of an interface is the networks of its wg-quick ``Address`` lines
(``10.8.0.1/24`` -> ``10.8.0.0/24``).  A client gets the lowest free host
address of each family's first network, as a /32 or /128: the network
address, the IPv4 broadcast address, the server's own addresses and every
address any peer (enabled or disabled) already routes are taken.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Interface = ipaddress.IPv4Interface | ipaddress.IPv6Interface


class PoolError(Exception):
    """No address can be given: the pool is full, or there is none."""


@dataclass(frozen=True)
class Pool:
    interface: str
    networks: tuple[Interface, ...]  # the server's own address with its prefix

    @classmethod
    def from_addresses(cls, interface: str, addresses: Iterable[str]) -> Pool:
        """:param addresses: wg-quick ``Address`` values (already validated)."""
        nets = tuple(ipaddress.ip_interface(a) for a in addresses)
        return cls(interface, nets)

    def allocate(self, used: Iterable[str]) -> list[str]:
        """The next free address of each family, as ``ip/32`` or ``ip/128``.

        :param used: allowed IPs (``ip/len``) of every peer, enabled or not.
        :raises PoolError: with the reason, naming the network.
        """
        taken = [ipaddress.ip_network(u, strict=False) for u in used]
        out: list[str] = []
        seen: set[int] = set()
        for iface in self.networks:
            if iface.version in seen:
                continue
            seen.add(iface.version)
            own = {i.ip for i in self.networks}
            out.append(f"{_lowest_free(iface, own, taken, self.interface)}/{iface.max_prefixlen}")
        if not out:
            raise PoolError(
                f"{self.interface} has no Address in its configuration file: "
                "the console cannot give clients addresses"
            )
        return out


def _lowest_free(iface: Interface, own: set[Address], taken: list[Network], name: str) -> Address:
    net = iface.network
    first = int(net.network_address) + 1
    last = int(net.broadcast_address) - (1 if net.version == 4 else 0)
    if net.prefixlen >= net.max_prefixlen - 1:
        raise PoolError(
            f"{name}'s Address {iface} leaves no room for clients: "
            "give it a shorter prefix (such as /24) in its configuration file"
        )
    # Only routes inside ``net`` block a candidate: a client's /32 is more
    # specific than a wider route (a site's 10.0.0.0/8), so both can be.
    # The walk is bounded by the number of routes: each step skips one.
    blocks = [
        (int(t.network_address), int(t.broadcast_address))
        for t in taken if t.version == net.version and t.subnet_of(net)  # type: ignore[arg-type]
    ]
    blocks += sorted((int(a), int(a)) for a in own if a.version == net.version)
    blocks.sort()
    candidate = first
    for lo, hi in blocks:
        if hi < candidate:
            continue
        if lo > candidate:
            break
        candidate = hi + 1
    if candidate > last:
        size = last - first + 1
        raise PoolError(
            f"the address pool {net} of {name} is full: its {size} addresses are the "
            "server's or its peers'; delete a peer or give the interface a shorter prefix"
        )
    if net.version == 4:
        return ipaddress.IPv4Address(candidate)
    return ipaddress.IPv6Address(candidate)
