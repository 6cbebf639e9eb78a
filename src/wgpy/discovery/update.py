"""Publishing LAN candidates: the DNS UPDATE message and local address discovery.

The UPDATE replaces the two LAN names of our key in one message (delete the
RRsets, then add), so a registry never holds a mix of old and new data::

    <b32>._wireguard-lan._udp.Z  SRV 0 0 <listen port> <b32>.lan.Z
    <b32>._wireguard-lan._udp.Z  TXT "txtvers=1" "nat=<kind>"
    <b32>.lan.Z                  A/AAAA <each LAN address>

It must be sent over UDP to a registry address routed through the tunnel:
the registry authorises it by the arrival interface and source address.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

import dns.update

from wgpy.discovery import records
from wgpy.discovery.records import IPAddress, IPNetwork, Names, NatKind


def build_update(
    names: Names,
    key: bytes,
    port: int | None,
    addresses: Sequence[IPAddress],
    nat: NatKind | None,
    ttl: int,
) -> dns.update.UpdateMessage:
    """An UPDATE that makes the registry hold exactly these LAN candidates for ``key``.

    With no port or no addresses the candidates are withdrawn (the NAT kind is
    still reported when known).
    """
    msg = dns.update.UpdateMessage(names.zone)
    instance, host = names.lan_instance(key), names.lan_host(key)
    msg.delete(instance)
    msg.delete(host)
    if port and addresses:
        msg.add(instance, ttl, records.srv(port, host))
        for ip in addresses:
            msg.add(host, ttl, records.address(ip))
    if nat is not None:
        msg.add(instance, ttl, records.txt([f"txtvers={records.TXT_VERSION}", f"nat={nat.value}"]))
    return msg


def detect_lan_addresses(interface: str, exclude: Sequence[IPNetwork]) -> list[IPAddress]:
    """Global unicast addresses of this host, except on ``interface`` and in ``exclude``.

    ``exclude`` holds the tunnel's allowed IPs, so tunnel addresses are never
    offered as LAN candidates.  Loopback and link-local addresses are skipped.
    """
    from pyroute2 import IPRoute  # imported late: it is slow to import

    out: list[IPAddress] = []
    with IPRoute() as ipr:
        names = {link["index"]: link.get_attr("IFLA_IFNAME") for link in ipr.get_links()}
        for msg in ipr.get_addr():
            if names.get(msg["index"]) in (interface, "lo"):
                continue
            text = msg.get_attr("IFA_ADDRESS")
            if not text:
                continue
            ip = ipaddress.ip_address(text)
            if ip.is_loopback or ip.is_link_local or ip.is_multicast or ip.is_unspecified:
                continue
            if any(ip.version == net.version and ip in net for net in exclude):
                continue
            if ip not in out:
                out.append(ip)
    return out



def interface_addresses(interface: str) -> list[IPAddress]:
    """The addresses configured on ``interface`` (none if it does not exist)."""
    from pyroute2 import IPRoute

    out: list[IPAddress] = []
    with IPRoute() as ipr:
        links = ipr.link_lookup(ifname=interface)
        if not links:
            return out
        for msg in ipr.get_addr(index=links[0]):
            text = msg.get_attr("IFA_ADDRESS")
            if text:
                out.append(ipaddress.ip_address(text))
    return out
