"""UPDATEs authenticated by TSIG as well as by the tunnel (``--update-tsig``), in
the NAT lab (needs root; runs under CI=true).

Issue 13 points 4 (UPDATEs optionally signed) and 7 (TSIG failures refused,
counted, logged once, nothing changed).  Two peers behind one NAT publish
LAN candidates; discover signs its UPDATEs with ``--tsig-keyfile``.
"""

from __future__ import annotations

import base64
import re

import pytest

from wgpy.testing.lab import Lab, require
from wgpy.testing.natlab import REG_PUBLIC, REG_TUNNEL, ZONE, NatLab, wait_ping

pytestmark = pytest.mark.netns


def b32(public_b64: str) -> str:
    return base64.b32encode(base64.b64decode(public_b64)).decode()


@pytest.fixture
def nl(lab: Lab) -> NatLab:
    require("wg", "dig", "iptables", "tsig-keygen")
    n = NatLab(lab)
    n.build_internet()
    n.build_registry()
    return n


def test_signed_updates_only_when_the_registry_asks(nl: NatLab) -> None:
    keyfile = nl.lab.workdir / "update.key"
    keyfile.write_text(nl.lab.run(None, "tsig-keygen -a hmac-sha256 upd").stdout)
    keyfile.chmod(0o600)
    found = re.search(r'secret "([^"]+)"', keyfile.read_text())
    assert found is not None
    secret = found.group(1)
    a, b = nl.two_peers(same_nat=True)  # LAN candidates connect them
    assert nl.reg is not None
    nl.start_registry("--tsig-keyfile", str(keyfile), "--update-tsig")
    nl.wait_registry_sees(a, b)

    # discover signs its UPDATEs: both publish LAN candidates and connect over the LAN.
    discovers = [nl.start_discover(p, "--tsig-keyfile", str(keyfile)) for p in (a, b)]
    wait_ping(nl, a, b.tunnel, timeout=40)
    lan_a = f"{b32(a.public)}.lan.{ZONE} A"
    assert nl.dig(nl.reg.ns, REG_PUBLIC, lan_a) == a.lan
    assert nl.endpoints(a)[b.public] == f"{b.lan}:51820"
    # Let the zone settle (discover's first passes publish in steps), so that a
    # serial that moves below is the refused UPDATEs' doing.
    serials: list[int] = []

    def settled() -> bool:
        serials.append(nl.registry_stats()["serial"])
        return len(serials) > 1 and serials[-1] == serials[-2]

    nl.lab.wait_for("the zone to settle", settled, 30, 3)
    before = nl.registry_stats()
    assert before["updates.accepted"] >= 2

    # Through the tunnel but unsigned: REFUSED.  Signed with another secret:
    # NOTAUTH with BADSIG.  Signed right: accepted.  The refused ones change nothing.
    wrong = base64.b64encode(b"w" * 32).decode()
    assert nl.send_update(a.ns, REG_TUNNEL, a.public, "192.168.1.77") == "REFUSED"
    assert nl.send_update(a.ns, REG_TUNNEL, a.public, "192.168.1.77", tcp=True) == "REFUSED"
    assert nl.send_update(a.ns, REG_TUNNEL, a.public, "192.168.1.78",
                          tsig=("upd", wrong)) == "NOTAUTH PeerBadSignature"
    assert nl.send_update(a.ns, REG_TUNNEL, a.public, "192.168.1.79",
                          tsig=("nobody", secret)) == "NOTAUTH PeerBadKey"
    assert nl.dig(nl.reg.ns, REG_PUBLIC, lan_a) == a.lan
    after = nl.registry_stats()
    assert after["update.refused"] - before.get("update.refused", 0) == 2
    assert after["tsig.badsig"] == 1 and after["tsig.badkey"] == 1
    assert after["serial"] == before["serial"]
    log = nl.lab.log("registry.log")
    assert len(re.findall(r"refused update: ", log)) == 1  # two refusals, one window
    assert len(re.findall(r"refused tsig: ", log)) == 1
    # A signed UPDATE from outside the tunnel is still refused: the key is not enough.
    # (Alice's discover stops first: every pass it publishes her real LAN address,
    # which would replace the one sent by hand before the check reads it.)
    discovers[0].terminate()
    discovers[0].wait(10)
    assert nl.send_update(a.ns, REG_PUBLIC, a.public, "192.168.1.80",
                          tsig=("upd", secret)) == "REFUSED"
    assert nl.send_update(a.ns, REG_TUNNEL, a.public, "192.168.1.81",
                          tsig=("upd", secret)) == "NOERROR"
    assert nl.dig(nl.reg.ns, REG_PUBLIC, lan_a) == "192.168.1.81"
    assert nl.ping(a, b.tunnel)
