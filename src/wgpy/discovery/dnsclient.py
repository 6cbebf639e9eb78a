"""Talking to the registries: queries with failover, UPDATEs over UDP or TCP.

``discover`` may be given several servers (``--registry``): the registry
itself, through the tunnel, and secondaries (BIND) that carry its zone.
Queries go to the server that answered last; when it does not answer, the
next one is asked, and so on round the list.  An UPDATE can only be applied
by the registry, and a secondary refuses it, so an UPDATE goes to each
server in turn until one accepts it.

UPDATEs go over UDP, or over TCP when they do not fit a 512-byte datagram
or the UDP attempt got no answer; with a TSIG key they are signed.
"""

from __future__ import annotations

import logging

import dns.exception
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdatatype
import dns.tsig
import dns.update

from wgpy.control.endpoint import format_endpoint
from wgpy.protocol.events import Endpoint

log = logging.getLogger("wgpy.discover")

UDP_UPDATE_MAX = 512


class RegistryUnreachable(Exception):
    pass


class RegistryClient:
    """DNS to one or more registry servers.

    :param servers: in order of preference.
    :param key: a TSIG key to sign UPDATEs with.
    """

    def __init__(self, servers: list[Endpoint], timeout: float = 2.0,
                 key: dns.tsig.Key | None = None) -> None:
        if not servers:
            raise ValueError("at least one registry server")
        self.servers = list(servers)
        self.timeout = timeout
        self.key = key
        self.current = 0
        self.failovers = 0

    @property
    def server(self) -> Endpoint:
        return self.servers[self.current]

    def query(self, name: dns.name.Name, rdtype: dns.rdatatype.RdataType) -> dns.message.Message:
        """The answer of the first server that gives one (the last that did goes first).

        :raises RegistryUnreachable: when none answers.
        """
        errors = []
        n = len(self.servers)
        for i in range(n):
            index = (self.current + i) % n
            host, port = self.servers[index]
            q = dns.message.make_query(name, rdtype)
            try:
                response, _tcp = dns.query.udp_with_fallback(q, host, timeout=self.timeout,
                                                             port=port)
            except (dns.exception.DNSException, OSError) as e:
                errors.append(f"{format_endpoint(host, port)}: {e or type(e).__name__}")
                continue
            if response.rcode() in (dns.rcode.SERVFAIL, dns.rcode.REFUSED):
                errors.append(f"{format_endpoint(host, port)}: "
                              f"{dns.rcode.to_text(response.rcode())}")
                continue
            if index != self.current:
                self.failovers += 1
                log.info("registry %s answers; %s did not", format_endpoint(host, port),
                         format_endpoint(*self.servers[self.current]))
                self.current = index
            return response
        raise RegistryUnreachable(
            f"no registry answered {name} {dns.rdatatype.to_text(rdtype)}: "
            + "; ".join(errors))

    def update(self, msg: dns.update.UpdateMessage) -> tuple[dns.rcode.Rcode, Endpoint]:
        """Send an UPDATE to each server until one accepts it; the last answer's
        rcode and server.

        :raises RegistryUnreachable: when no server answers at all.
        """
        answered: tuple[dns.rcode.Rcode, Endpoint] | None = None
        errors = []
        n = len(self.servers)
        for i in range(n):
            server = self.servers[(self.current + i) % n]
            try:
                rcode = self._send_update(msg, server)
            except (dns.exception.DNSException, OSError) as e:
                errors.append(f"{format_endpoint(*server)}: {e or type(e).__name__}")
                continue
            answered = (rcode, server)
            if rcode == dns.rcode.NOERROR:
                return answered
        if answered is None:
            raise RegistryUnreachable("no registry answered the update: " + "; ".join(errors))
        return answered

    def _send_update(self, msg: dns.update.UpdateMessage, server: Endpoint) -> dns.rcode.Rcode:
        host, port = server
        if self.key is not None:
            msg.use_tsig(self.key)
        if len(msg.to_wire()) > UDP_UPDATE_MAX:
            return dns.query.tcp(msg, host, timeout=self.timeout, port=port).rcode()
        try:
            return dns.query.udp(msg, host, timeout=self.timeout, port=port).rcode()
        except dns.exception.Timeout:
            # No answer over UDP (lost, or filtered): TCP, as RFC 2136 allows.
            return dns.query.tcp(msg, host, timeout=self.timeout, port=port).rcode()
