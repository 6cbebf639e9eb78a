"""The README's proxy walkthrough, run as written in three namespaces.

Every ``sh`` block of the section runs (``wgpy.testing.walkthrough``, bash
``-e``) in the namespace its ``# on HOST`` line names, in file order; a
``text`` block right under it is what it prints, stdout then stderr.  The
two blocks that end in a server (the origin's web server, ``wgpy proxy
run``) are started in the background, as a reader runs them in a terminal of
their own, and the test waits until they serve.

Between the README's text and what runs there is only this substitution,
because the lab shares one file system and one ``/var/run/wireguard`` with
the machine:

=======================  ==================================================
README                   lab
=======================  ==================================================
``wg0``                  a unique interface name per host (two walkthrough
                         objects, one per end of the tunnel)
``ORIGIN_PUBKEY``,       the key that the origin's (the proxy's) ``wg
``PROXY_PUBKEY``         pubkey`` printed, as the README says to copy it
``/etc/wgpy``            ``WORKDIR/etc``
``/srv/www``             ``WORKDIR/www``
``/run/wgpy-proxy.sock`` ``WORKDIR/ctl.sock``
=======================  ==================================================

Addresses need none: ``proxylab.hosts`` builds exactly the README's network
(client 192.168.50.2, proxy 192.168.50.1 and 192.168.60.1, origin
192.168.60.2) and nothing more.  What the README says in prose is done here
explicitly: Ctrl-C to stop the proxy, teardown's refusal before that, and
the PROXY-header mistake whose warning docs/proxy.md shows.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from wgpy.proxy import control
from wgpy.testing.lab import Lab, require
from wgpy.testing.proxylab import Topology, hosts, snapshot
from wgpy.testing.walkthrough import Block, Run, Walkthrough, extract

pytestmark = pytest.mark.netns

HEADING = "`wgpy proxy`: publish a private web server on every port of a prefix"
DOCS = Path(__file__).resolve().parents[2] / "docs" / "proxy.md"

# Blocks meant to fail, by a line they contain, and their exit status.
EXPECTED_STATUS = {"wgpy proxy check --config /etc/wgpy/typo.conf": 2}
# Outputs with per-run numbers (pid, uptime, bytes, probe counts): compared
# with every number replaced, so the lines and their words must still match.
NUMBERS_VARY = ("wgpy proxy status",)


class Walk:
    def __init__(self, lab: Lab, topo: Topology) -> None:
        self.lab, self.topo = lab, topo
        work = lab.workdir
        self.conf, self.ctl = work / "etc" / "proxy.conf", work / "ctl.sock"
        # One table for both ends; the keys join it once their blocks print them.
        self.replace = {"/etc/wgpy": str(work / "etc"), "/srv/www": str(work / "www"),
                        "/run/wgpy-proxy.sock": str(self.ctl)}  # fmt: skip
        near = Walkthrough(lab, HEADING, interfaces=["wg0"], replace=self.replace,
                           hosts={"proxy": topo.prx, "client": topo.cli})  # fmt: skip
        far = Walkthrough(lab, HEADING, interfaces=["wg0"], replace=self.replace,
                          hosts={"origin": topo.org})  # fmt: skip
        self.by_host = {"proxy": near, "client": near, "origin": far}
        self.blocks = near.blocks
        self.servers: dict[str, Run] = {}

    def wt(self, b: Block) -> Walkthrough:
        assert b.host in self.by_host, f"README.md:{b.lineno}: no '# on HOST' line"
        return self.by_host[b.host]

    def output_under(self, b: Block) -> str | None:
        """The ``text`` block right under ``b`` (one blank line between), if any."""
        closing = b.lineno + b.text.count("\n") + 1
        nxt = next((x for x in self.blocks if x.lineno > b.lineno), None)
        if nxt is not None and nxt.lang == "text" and nxt.lineno == closing + 2:
            return nxt.text
        return None

    def run(self, b: Block, status: int = 0) -> str:
        r = self.wt(b).run(b, timeout=60)
        out = r.stdout + r.stderr
        assert r.returncode == status, f"README.md:{b.lineno} exited {r.returncode}:\n{out}"
        return out

    def start(self, b: Block, ready: Callable[[], bool]) -> Run:
        r = self.wt(b).start(b)
        assert r.process is not None

        def up() -> bool:
            log = Path(r.stdout).read_text(errors="replace") if Path(r.stdout).exists() else ""
            assert r.process is not None and r.process.poll() is None, (
                f"README.md:{b.lineno} exited:\n{log}")  # fmt: skip
            return ready()

        self.lab.wait_for(f"README.md:{b.lineno} to serve", up, timeout=30, step=0.1)
        return r

    def expect(self, b: Block, out: str) -> None:
        want = self.output_under(b)
        if want is None:
            return
        want, got = self.wt(b).substitute(want).strip(), out.strip()
        if any(cmd in b.text for cmd in NUMBERS_VARY):
            want, got = (re.sub(r"\d+(\.\d+)?", "N", x) for x in (want, got))
        assert got == want, f"README.md:{b.lineno} shows\n{want}\nbut it printed\n{got}"

    def proxy(self, *argv: str, status: int = 0) -> subprocess.CompletedProcess[str]:
        r = self.lab.run(self.topo.prx, ["wgpy", "proxy", *argv], check=False)
        assert r.returncode == status, (argv, r.returncode, r.stdout, r.stderr)
        return r


def test_the_proxy_walkthrough_works_as_written(lab: Lab) -> None:
    require("nft", "curl", "wg", "wgpyd", "wgpy")
    topo = hosts(lab)
    walk = Walk(lab, topo)
    shell = [b for b in walk.blocks if b.lang == "sh"]
    assert shell and all(b.host is not None for b in shell)
    before_setup = ""
    for b in shell:
        if "python3 -m http.server" in b.text:
            walk.servers["origin"] = walk.start(b, lambda: lab.run(
                topo.org, "exec 3<>/dev/tcp/10.99.0.2/8080", check=False).returncode == 0)
            continue
        if "wgpy proxy run" in b.text:
            before_setup = snapshot(lab, topo.prx)
            walk.servers["proxy"] = walk.start(b, lambda: control.probe(str(walk.ctl)) is not None)
            continue
        if "wgpy proxy teardown" in b.text:
            teardown_refused_then_ctrl_c(walk, b)
        status = next((s for line, s in EXPECTED_STATUS.items() if line in b.text), 0)
        out = walk.run(b, status)
        walk.expect(b, out)
        if "wg pubkey" in b.text and b.host is not None:  # "... the key the other end names"
            walk.replace[f"{b.host.upper()}_PUBKEY"] = out.split()[0]
        if "curl" in b.text:
            web = control.request(str(walk.ctl), "status")["rules"]["web"]  # type: ignore[index]
            assert web["connections"] == 2 and web["bytes_down"] > 0, web
        if "wgpy proxy reload" in b.text:
            assert f"reloaded {walk.conf}: 1 rule(s)\n" in out, out
            proxy_header_mistake_is_explained(walk)
    assert set(walk.replace) >= {"ORIGIN_PUBKEY", "PROXY_PUBKEY"}
    assert before_setup and snapshot(lab, topo.prx) == before_setup  # teardown removed it all


def teardown_refused_then_ctrl_c(walk: Walk, b: Block) -> None:
    """Teardown refuses while the proxy runs; Ctrl-C stops the proxy."""
    out = walk.run(b, status=1)
    assert out.startswith("wgpy proxy: a proxy (pid ") and "or use --force" in out, out
    assert "wgpy_proxy" in walk.lab.run(walk.topo.prx, "nft list tables").stdout
    p = walk.servers["proxy"].process
    assert p is not None
    os.killpg(p.pid, signal.SIGINT)
    assert p.wait(timeout=10) == 0


def proxy_header_mistake_is_explained(walk: Walk) -> None:
    """``ProxyProtocol = v2`` in front of the walkthrough's plain server: curl
    gets an empty reply, and the proxy logs and counts docs/proxy.md's hint."""
    (hint_block,) = [b for b in extract(DOCS.read_text(), "PROXY protocol") if b.lang == "text"]
    hint = hint_block.text.strip()
    log = Path(walk.servers["proxy"].stdout)
    good = walk.conf.read_text()
    walk.conf.write_text(good.replace("Deny =", "ProxyProtocol = v2\nDeny ="))
    try:
        assert "1 rule(s)" in walk.proxy("reload", "--config", str(walk.conf)).stdout
        r = walk.lab.run(walk.topo.cli, "curl -sS --max-time 10 http://10.77.0.5:80/",
                         check=False, timeout=20)  # fmt: skip
        assert r.returncode == 52 and "Empty reply from server" in r.stderr, r
        walk.lab.wait_for("the proxy's warning", lambda: hint in log.read_text().splitlines())
        st = walk.proxy("status", "--config", str(walk.conf)).stdout
        assert "silent origin closes 1" in st and hint.split("rule web: ")[1] in st, st
    finally:
        walk.conf.write_text(good)
    walk.proxy("reload", "--config", str(walk.conf))
