"""The README's NAT walkthrough, run as written in docs/nat-lab.md's lab.

docs/nat-lab.md's blocks build the lab (namespaces, links, home routers) and
take it down again; then every block of the README's section "NAT traversal"
runs in the namespace its ``# on HOST`` first line names, in order:

- a ``sh`` block runs in ``bash -e -o pipefail`` (``&`` leaves a program
  running, as in a terminal);
- an ``ini`` block marked ``# on HOST: PATH`` is written to PATH on HOST;
- a ``text`` block right after a ``sh`` block is what that block prints:
  each of its lines must appear in the output (whitespace aside, in any
  order).  A block with output shown is only reading, so it is run again,
  for a bounded time, until the output matches, as a person would look
  again a second later;
- the ``ping`` block runs once alice's discover has logged its direct path,
  as the text says to wait for.

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
import os
import re
import shlex
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from wgpy.control.keys import Key
from wgpy.testing.docblocks import THE_MACHINE, Block, blocks, repo_file
from wgpy.testing.lab import Lab, LabError, require

pytestmark = pytest.mark.netns

SECTION = "NAT traversal"
ADDRESSES = {"203.0.113.1": "10.200.0.2", "198.51.100.1": "10.201.0.2",
             "198.51.100.2": "10.202.0.2"}
LAB_HOSTS = ("inet", "registry", "nat-a", "nat-b", "alice", "bob")
WG_HOSTS = ("registry", "alice", "bob")
CHECK_FOR = 20.0  # seconds a block with output shown may take to show it
PLACEHOLDER = re.compile(r"<[a-z][a-z0-9 ]*>")


def _host_names(names: dict[str, str]) -> re.Pattern[str]:
    alternatives = "|".join(sorted(map(re.escape, names), key=len, reverse=True))
    return re.compile(rf"(?<![\w-])({alternatives})(?![\w-])")


@dataclass
class Walk:
    """The lab, what the walkthrough has made so far, and the output of each step."""

    lab: Lab
    ns: dict[str, str] = field(default_factory=dict)  # host -> namespace
    ifname: dict[str, str] = field(default_factory=dict)  # host -> its "wg0"
    values: dict[str, str] = field(default_factory=dict)  # placeholder -> value
    logs: dict[tuple[int, str], str] = field(default_factory=dict)  # (line, host) -> log name
    groups: list[int] = field(default_factory=list)

    # -- substitutions ---------------------------------------------------------

    def lab_text(self, text: str) -> str:
        """docs/nat-lab.md's text with the run's namespace names."""
        return _host_names(self.ns).sub(lambda m: self.ns[m.group(1)], text)

    def readme_text(self, text: str, host: str, where: str) -> str:
        """README text with the placeholders, addresses and interface name of ``host``."""
        for placeholder, value in self.values.items():
            text = text.replace(placeholder, value)
        for example, real in ADDRESSES.items():
            text = re.sub(rf"(?<![\d.]){re.escape(example)}(?![\d])", real, text)
        text = re.sub(r"\bwg0\b", self.ifname[host], text)
        left = PLACEHOLDER.findall(text)
        assert not left, f"{where}: no value for {left} yet"
        return text

    # -- running -----------------------------------------------------------------

    def run(self, ns: str | None, script: str, where: str, log: str, timeout: float = 90) -> str:
        """Run ``script`` as a block: bash -e, output to ``log``; its text on success."""
        p = self.lab.popen(ns, ["bash", "-e", "-o", "pipefail", "-c", script], log=log)
        self.groups.append(p.pid)  # what it leaves running with & stays in this group
        try:
            rc = p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise LabError(f"{where} still running after {timeout:g}s:\n"
                           f"{self.lab.log(log)}") from None
        out = self.lab.log(log)
        assert rc == 0, f"{where} exited {rc}:\n{out}"
        return out

    def write_file(self, block: Block, host: str, where: str) -> None:
        path = self.readme_text(block.note, host, where)
        text = self.readme_text(block.text, host, where)
        self.lab.run(self.ns[host], f"umask 077; cat > {shlex.quote(path)}", input=text.encode())

    def learn_keys(self, block: Block, host: str, out: str) -> None:
        """After step 1: HOST's keys, for the placeholders of the later steps."""
        key_file = Path("/etc/netns") / self.ns[host] / "wireguard" / f"{self.ifname[host]}.key"
        if f"<{host} public key>" in self.values or not key_file.exists():
            return
        private = key_file.read_text().strip()
        public = Key.from_base64(private).public_key().to_base64()
        assert out.split() and out.split()[-1] == public, \
            f"README.md:{block.line} on {host}: printed {out!r}, the key's public key is {public}"
        self.values[f"<{host} private key>"] = private
        self.values[f"<{host} public key>"] = public
        self.values[f"<{host} B32>"] = base64.b32encode(base64.b64decode(public)).decode()

    def log_of(self, needle: str, host: str, readme: list[Block]) -> str:
        """What the README block containing ``needle`` has printed on ``host`` so far."""
        line = next(b.line for b in readme if needle in b.text)
        return self.lab.log(self.logs[(line, host)])

    # -- teardown ----------------------------------------------------------------

    def stop_everything(self) -> None:
        """Stop every process in the lab's namespaces (all started by this test), then
        remove the lab's /etc/netns directories.  Runs even when the test failed."""
        for pgid in self.groups:
            try:
                os.killpg(pgid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        pids: list[int] = []
        for ns in self.ns.values():
            p = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True)
            pids += [int(x) for x in p.stdout.split()]
        for pid in pids:
            try:
                os.kill(pid, signal.SIGTERM)  # wgpyd removes its interface and socket
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 5
        while pids and time.monotonic() < deadline:
            pids = [pid for pid in pids if Path(f"/proc/{pid}").exists()]
            time.sleep(0.1)
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for ns in self.ns.values():
            subprocess.run(["rm", "-rf", f"/etc/netns/{ns}"], check=False)
        subprocess.run(["rmdir", "--ignore-fail-on-non-empty", "/etc/netns"],
                       capture_output=True, check=False)


def mirror(block: Block) -> Block:
    """Alice's file as the README turns it into bob's."""
    swap = {"alice": "bob", "bob": "alice", "10.99.0.1": "10.99.0.2", "10.99.0.2": "10.99.0.1"}
    text = re.sub(r"\b(alice|bob|10\.99\.0\.[12])\b", lambda m: swap[m.group(1)], block.text)
    return Block(block.lang, text, block.line, block.heading)


def check_output(walk: Walk, block: Block, shown: Block, host: str, ns: str, log: str) -> str:
    where = f"README.md:{block.line} on {host}"
    script = walk.readme_text(block.text, host, where)
    want = [" ".join(line.split()) for line in
            walk.readme_text(shown.text, host, f"README.md:{shown.line}").splitlines()
            if line.strip()]
    deadline = time.monotonic() + CHECK_FOR
    while True:
        out = walk.run(ns, script, where, log)
        got = {" ".join(line.split()) for line in out.splitlines()}
        missing = [w for w in want if w not in got]
        if not missing:
            return out
        if time.monotonic() > deadline:
            raise AssertionError(f"{where}: the output lacks, after {CHECK_FOR:g}s,\n"
                                 + "\n".join(missing) + f"\nIt printed:\n{out}")
        time.sleep(1)


@pytest.fixture
def walk(lab: Lab) -> Iterator[Walk]:
    require("wg", "wgpy", "wgpyd", "dig", "iptables", "ping", "base32")
    if not Path("/etc/wireguard").is_dir():
        pytest.fail("/etc/wireguard is missing: install wireguard-tools (scripts/setup.sh)")
    w = Walk(lab)
    for host in LAB_HOSTS:
        w.ns[host] = lab.name(host.replace("-", ""))
    lab.namespaces += list(w.ns.values())  # the page creates them; the lab deletes them
    for host in WG_HOSTS:
        w.ifname[host] = lab.wg_name()
    try:
        yield w
    finally:
        w.stop_everything()


def test_readme_nat_walkthrough(walk: Walk) -> None:
    lab = walk.lab
    page = blocks(repo_file("docs/nat-lab.md"))
    teardown = [b for b in page if b.heading == "Remove it"]
    assert len(teardown) == 1

    # docs/nat-lab.md: build the lab.
    for b in page:
        if b.lang != "sh" or b in teardown:
            continue
        assert b.hosts, f"docs/nat-lab.md:{b.line}: a shell block without '# on HOST'"
        for host in b.hosts:
            ns = None if host == THE_MACHINE else walk.ns[host]
            walk.run(ns, walk.lab_text(b.text), f"docs/nat-lab.md:{b.line} on {host}",
                     f"lab-{b.line}-{host}.log")

    # The README, step by step.
    readme = blocks(repo_file("README.md"), SECTION)
    ran = 0
    for i, b in enumerate(readme):
        if b.lang not in ("sh", "ini"):
            continue
        assert b.hosts and all(h in WG_HOSTS for h in b.hosts), \
            f"README.md:{b.line}: a {b.lang} block without '# on registry|alice|bob'"
        shown = readme[i + 1] if i + 1 < len(readme) and readme[i + 1].lang == "text" else None
        for host in b.hosts:
            where = f"README.md:{b.line} on {host}"
            if b.lang == "ini":
                walk.write_file(b, host, where)
                if host == "alice":
                    # "Bob's file is alice's with alice/bob and 10.99.0.1/10.99.0.2 swapped."
                    walk.write_file(mirror(b), "bob", f"{where}, swapped for bob")
                continue
            log = f"readme-{b.line}-{host}.log"
            walk.logs[(b.line, host)] = log
            if "ping" in b.text:
                # "From then on [after discover logs 'direct path via'] the tunnel works."
                lab.wait_for("alice's discover to log a direct path",
                             lambda: "direct path via" in walk.log_of("wgpy discover", "alice",
                                                                      readme), 30, 0.2)
            if shown is not None:
                out = check_output(walk, b, shown, host, walk.ns[host], log)
            else:
                out = walk.run(walk.ns[host], walk.readme_text(b.text, host, where), where, log)
            walk.learn_keys(b, host, out)
            ran += 1
    assert ran >= 8, f"only {ran} shell blocks ran: did the section lose its markers?"

    # What the text promises besides the output it shows.
    alice, bob = walk.values["<alice public key>"], walk.values["<bob public key>"]
    for host, other_nat, other in (("alice", "10.202.0.2", bob), ("bob", "10.201.0.2", alice)):
        log = walk.log_of("wgpy discover", host, readme)
        assert "NAT type: cone (" in log, log
        name = re.escape(Key.from_base64(other).short_name())
        assert re.search(rf"{name}: direct path via {re.escape(other_nat)}:51820 \(nat\) "
                         r"after \d+\.\ds", log), log

    # "The registry carries none of that traffic": send some, read the counters
    # with the README's own command before and after.
    def registry_counters() -> dict[str, int]:
        # The README names this command in its text, not in a block.
        out = walk.run(walk.ns["registry"],
                       walk.readme_text("wg show wg0 transfer\n", "registry", "transfer"),
                       "wg show transfer", "transfer.log")
        return {k: int(rx) + int(tx) for k, rx, tx in (line.split() for line in out.splitlines())}

    before = registry_counters()
    lab.run(walk.ns["alice"], "ping -q -c 100 -i 0.01 -s 1200 -w 20 10.99.0.2", timeout=30)
    after = registry_counters()
    moved = {k: after[k] - before[k] for k in (alice, bob)}
    assert all(m < 100 * 1200 / 10 for m in moved.values()), moved  # under a tenth

    # docs/nat-lab.md: take it down, as the page says.
    [b] = teardown
    walk.run(None, walk.lab_text(b.text), f"docs/nat-lab.md:{b.line}", "lab-remove.log")
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert not any(ns in netns.split() for ns in walk.ns.values()), netns
    assert not any(Path(f"/etc/netns/{walk.ns[h]}").exists() for h in WG_HOSTS)
    for h in WG_HOSTS:
        assert not Path(f"/var/run/wireguard/{walk.ifname[h]}.sock").exists()
