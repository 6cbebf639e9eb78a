"""The README's NAT walkthrough, run as written in docs/nat-lab.md's lab.

docs/nat-lab.md's blocks build the lab (namespaces, links, home routers) and
take it down again; in between, every block of the README's section "NAT
traversal" runs, in order, on the hosts its ``# on ...`` first line names
(``wgpy.testing.walkthrough`` runs them with ``bash -e``):

- a block that leaves a program running (a line ending in ``&``, as one
  types it in a terminal) is started, and must exit 0 once it has;
- an ``ini`` block marked ``# on HOST: PATH`` is written to PATH on HOST;
  "Bob's file is alice's with alice/bob and 10.99.0.1/10.99.0.2 swapped" is
  done as it says;
- a ``text`` block right after a shell block is what that block prints:
  each of its lines must appear in the output (whitespace aside, in any
  order).  Such a block only reads, so it runs again, for a bounded time,
  until the output matches, as a person would look again a second later;
- the ping runs once alice's discover has logged its direct path, as the
  text says to wait for.

The only changes to the text are these substitutions:

- ``203.0.113.1``, ``198.51.100.1``, ``198.51.100.2`` (the registry's, NAT
  A's and NAT B's public addresses) become the lab's ``10.200.0.2``,
  ``10.201.0.2``, ``10.202.0.2`` (``ADDRESSES``, as docs/nat-lab.md's table);
- ``wg0`` becomes a name unique to the host and the run (``Lab.wg_name``):
  every namespace shares ``/var/run/wireguard``;
- ``<HOST private key>`` and ``<HOST public key>`` become the key HOST's step
  1 wrote and the public key it printed; ``<HOST B32>`` that public key in
  base32, as the README's ``B32=`` line computes it;
- docs/nat-lab.md's namespace names (``inet``, ``registry``, ...) become
  names unique to the run (``Lab.name``).

Each host's ``/etc/wireguard`` is its own: ``ip netns exec NAME`` mounts
``/etc/netns/NAME/wireguard`` there, which the lab page creates and removes.
"""

from __future__ import annotations

import base64
import re
import shlex
import subprocess
import time
from dataclasses import replace
from pathlib import Path

import pytest

from wgpy.control.keys import Key
from wgpy.testing.lab import Lab, require
from wgpy.testing.natlab import NAT_LAB_PAGE
from wgpy.testing.walkthrough import Block, Walkthrough, WalkthroughError

pytestmark = pytest.mark.netns

SECTION = "NAT traversal: `wgpy registry` and `wgpy discover`"
PAGE = "A NAT lab in network namespaces"
ADDRESSES = {"203.0.113.1": "10.200.0.2", "198.51.100.1": "10.201.0.2",
             "198.51.100.2": "10.202.0.2"}
LAB_HOSTS = ["inet", "registry", "nat-a", "nat-b", "alice", "bob"]
WG_HOSTS = ("registry", "alice", "bob")
CHECK_FOR = 20.0  # seconds a block with output shown may take to show it
PLACEHOLDER = re.compile(r"<[a-z][a-z0-9 ]*>")


def mirror(block: Block) -> Block:
    """Alice's file as the README turns it into bob's."""
    swap = {"alice": "bob", "bob": "alice", "10.99.0.1": "10.99.0.2", "10.99.0.2": "10.99.0.1"}
    text = re.sub(r"\b(alice|bob|10\.99\.0\.[12])\b", lambda m: swap[m.group(1)], block.text)
    return replace(block, text=text, hosts=("bob",))


def lines(text: str) -> list[str]:
    return [" ".join(line.split()) for line in text.splitlines() if line.strip()]


class NatWalk:
    """The lab page's walkthrough, and one README walkthrough per host (each
    host's ``wg0`` is its own unique name); ``values`` grows as step 1 makes keys."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.values: dict[str, str] = dict(ADDRESSES)
        self.page = Walkthrough(lab, PAGE, namespaces=LAB_HOSTS, readme=NAT_LAB_PAGE)
        self.hosts = {h: Walkthrough(lab, SECTION, interfaces=["wg0"], replace=self.values,
                                     hosts={h: self.page.names[h]}) for h in WG_HOSTS}
        self.logs: dict[tuple[int, str], str] = {}  # (README line, host) -> started block's log

    def ns(self, host: str) -> str:
        return self.page.names[host]

    def ifname(self, host: str) -> str:
        return self.hosts[host].names["wg0"]

    def script(self, block: Block, host: str) -> str:
        text = self.hosts[host].substitute(block.commands())
        left = PLACEHOLDER.findall(text)
        assert not left, f"README.md:{block.lineno}: no value for {left} yet"
        return text

    def run(self, block: Block, host: str) -> str:
        """Run a README shell block on ``host``; what it printed."""
        self.script(block, host)  # every placeholder known
        wt = self.hosts[host]
        if any(line.rstrip().endswith("&") for line in block.text.splitlines()):
            r = wt.start(block, host=host)
            assert r.process is not None
            r.process.wait(timeout=60)  # the shell exits once it has started the program
            r.check()
            self.logs[(block.lineno, host)] = r.stdout
            return Path(r.stdout).read_text(errors="replace")
        r = wt.run(block, timeout=60, host=host).check()
        return r.stdout + r.stderr

    def run_until(self, block: Block, shown: Block, host: str) -> str:
        want = lines(self.hosts[host].substitute(shown.text))
        deadline = time.monotonic() + CHECK_FOR
        while True:
            out = self.run(block, host)
            missing = [w for w in want if w not in set(lines(out))]
            if not missing:
                return out
            if time.monotonic() > deadline:
                raise WalkthroughError(
                    f"README.md:{block.lineno} on {host}: after {CHECK_FOR:g}s the output lacks\n"
                    + "\n".join(missing) + f"\nIt printed:\n{out}")
            time.sleep(1)

    def write_file(self, block: Block, host: str) -> None:
        wt = self.hosts[host]
        path, text = wt.substitute(block.note), wt.substitute(block.text)
        assert not PLACEHOLDER.findall(text), f"README.md:{block.lineno}: {text}"
        self.lab.run(self.ns(host), f"umask 077; cat > {shlex.quote(path)}", input=text.encode())

    def learn_keys(self, block: Block, host: str, out: str) -> None:
        """After step 1: HOST's keys, for the placeholders of the later steps."""
        key_file = Path("/etc/netns") / self.ns(host) / "wireguard" / f"{self.ifname(host)}.key"
        if f"<{host} public key>" in self.values or not key_file.exists():
            return
        private = key_file.read_text().strip()
        public = Key.from_base64(private).public_key().to_base64()
        assert out.split() and out.split()[-1] == public, \
            f"README.md:{block.lineno} on {host}: printed {out!r}, its key's public key is {public}"
        self.values[f"<{host} private key>"] = private
        self.values[f"<{host} public key>"] = public
        self.values[f"<{host} B32>"] = base64.b32encode(base64.b64decode(public)).decode()

    def remove_etc_netns(self) -> None:
        for host in LAB_HOSTS:
            subprocess.run(["rm", "-rf", f"/etc/netns/{self.ns(host)}"], check=False)
        subprocess.run(["rmdir", "--ignore-fail-on-non-empty", "/etc/netns"],
                       capture_output=True, check=False)


def test_readme_nat_walkthrough(lab: Lab) -> None:
    require("wg", "wgpy", "wgpyd", "dig", "iptables", "ping", "base32")
    if not Path("/etc/wireguard").is_dir():
        pytest.fail("/etc/wireguard is missing: install wireguard-tools (scripts/setup.sh)")
    walk = NatWalk(lab)
    lab.cleanups.insert(0, walk.remove_etc_netns)  # the last cleanup: after the processes

    # docs/nat-lab.md: build the lab.
    page = walk.page
    teardown = page.block(containing="ip netns del")
    for b in page.shell_blocks:
        if b is teardown:
            continue
        assert b.hosts, f"docs/nat-lab.md:{b.lineno}: a shell block without '# on HOST'"
        for host in b.hosts:
            page.run(b, timeout=60, host=host).check()

    # The README, step by step.
    readme = walk.hosts["registry"].blocks

    def discover_log(host: str) -> str:
        line = next(b.lineno for b in readme if "wgpy discover" in b.text)
        path = walk.logs.get((line, host))
        return Path(path).read_text(errors="replace") if path else ""

    ran = 0
    for i, b in enumerate(readme):
        if b.lang not in ("sh", "ini"):
            continue
        assert b.hosts and all(h in WG_HOSTS for h in b.hosts), \
            f"README.md:{b.lineno}: a {b.lang} block without '# on registry|alice|bob'"
        shown = readme[i + 1] if i + 1 < len(readme) and readme[i + 1].lang == "text" else None
        for host in b.hosts:
            if b.lang == "ini":
                walk.write_file(b, host)
                if host == "alice":
                    walk.write_file(mirror(b), "bob")  # "Bob's file is alice's with ... swapped"
                continue
            if "ping" in b.text:
                # "from then on [once discover logged 'direct path via'] the peers talk directly"
                lab.wait_for("alice's discover to log a direct path",
                             lambda: "direct path via" in discover_log("alice"), 30, 0.2)
            out = walk.run_until(b, shown, host) if shown else walk.run(b, host)
            walk.learn_keys(b, host, out)
            ran += 1
    assert ran >= 10, f"only {ran} shell blocks ran: did the section lose its markers?"

    # What the text promises besides the output it shows: discover's lines.
    alice, bob = walk.values["<alice public key>"], walk.values["<bob public key>"]
    for host, other_nat, other in (("alice", "10.202.0.2", bob), ("bob", "10.201.0.2", alice)):
        log = discover_log(host)
        assert "NAT type: cone (" in log, log
        name = re.escape(Key.from_base64(other).short_name())
        assert re.search(rf"{name}: direct path via {re.escape(other_nat)}:51820 \(nat\) "
                         r"after \d+\.\ds", log), log

    # "None of it passes through the registry: `wg show wg0 transfer` there grows
    # only by keepalives and DNS queries": send some, read it before and after.
    def registry_counters() -> dict[str, int]:
        cmd = f"wg show {walk.ifname('registry')} transfer"
        out = lab.run(walk.ns("registry"), cmd).stdout
        return {k: int(rx) + int(tx) for k, rx, tx in (line.split() for line in out.splitlines())}

    before = registry_counters()
    lab.run(walk.ns("alice"), "ping -q -c 100 -i 0.01 -s 1200 -w 20 10.99.0.2", timeout=30)
    after = registry_counters()
    moved = {k: after[k] - before[k] for k in (alice, bob)}
    assert all(m < 100 * 1200 / 10 for m in moved.values()), moved  # under a tenth

    # docs/nat-lab.md: take it down, as the page says, and nothing is left.
    page.run(teardown, timeout=60).check()
    assert [x for x in page.wait_clean(timeout=10) if not x.startswith("file")] == []
    for host in WG_HOSTS:
        assert not Path(f"/etc/netns/{walk.ns(host)}").exists()
        assert [x for x in walk.hosts[host].leftovers() if not x.startswith("file")] == []
