"""The README's walkthroughs, run as written (wgpy.testing.walkthrough has the
substitution table: only names are made unique per run)."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from wgpy.testing.lab import Lab, require
from wgpy.testing.walkthrough import Walkthrough, WalkthroughError, extract

pytestmark = pytest.mark.netns

QUICK_START = "Quick start: two peers by hand"


def test_extract_finds_the_quick_start_blocks_in_order() -> None:
    from wgpy.testing.walkthrough import README

    blocks = extract(README.read_text(), QUICK_START)
    assert [b.lang for b in blocks] == ["sh", "sh", "sh"]
    assert "ip netns add alice" in blocks[0].text
    assert "ping" in blocks[1].text
    assert "ip netns del" in blocks[2].text
    # keys are written only once umask 077 is in force (wg warns otherwise)
    setup = blocks[0].text
    assert setup.index("umask 077") < setup.index("wg genkey")


def test_extract_reads_markers_prompts_and_sections() -> None:
    md = (
        "# Top\n\n## A\n\n```sh\n# on the proxy\necho a\n```\n\n### A.1\n\n"
        "```console\n$ echo b \\\n    c\nb c\n# echo d\n```\n\n## B\n\n```sh\necho e\n```\n"
    )
    blocks = extract(md, "A")
    assert [(b.lang, b.host) for b in blocks] == [("sh", "proxy"), ("console", None)]
    assert blocks[1].commands() == "echo b \\\n    c\necho d\n"
    assert [b.text for b in extract(md, "B")] == ["echo e\n"]
    with pytest.raises(WalkthroughError):
        extract(md, "C")


def test_quick_start_as_written(lab: Lab) -> None:
    require("wg", "wireguard-go", "ping")
    wt = Walkthrough(
        lab,
        QUICK_START,
        namespaces=["alice", "bob"],
        interfaces=["wga", "wgb"],
        links=["veth-a", "veth-b"],
    )
    setup, check, cleanup = wt.shell_blocks
    # the substitution renames, and changes nothing else
    renamed = wt.text(setup)
    assert "alice" not in renamed.replace(wt.names["alice"], "")
    assert re.sub(r"\S+", "w", renamed) == re.sub(r"\S+", "w", setup.text)

    wt.run(setup, timeout=60).check()
    r = wt.run(check, timeout=60).check()
    assert "3 packets transmitted, 3 received" in r.stdout
    assert f"interface: {wt.names['wga']}" in r.stdout
    assert "latest handshake:" in r.stdout
    assert re.search(r"transfer: [\d.]+ \w*B received, [\d.]+ \w*B sent", r.stdout)
    # wg warns when keys go to a file others can read: umask 077 comes first
    assert "world accessible" not in wt.runs[0].stderr

    wt.run(cleanup, timeout=60).check()
    assert wt.wait_clean(timeout=10) == []


def test_walkthrough_cleanup_is_guaranteed(lab: Lab) -> None:
    """A walkthrough that stops half-way leaves nothing once the lab closes:
    the daemons the README started in its namespaces are killed."""
    require("wg", "wireguard-go")
    wt = Walkthrough(
        lab,
        QUICK_START,
        namespaces=["alice", "bob"],
        interfaces=["wga", "wgb"],
        links=["veth-a", "veth-b"],
    )
    wt.run(wt.shell_blocks[0], timeout=60).check()
    assert any(x.startswith("process") for x in wt.leftovers())
    wt.cleanup()
    left = [x for x in wt.wait_clean(timeout=10) if not x.startswith("file")]
    assert left == []


def test_a_failing_block_reports_the_readme_line(lab: Lab) -> None:
    wt = Walkthrough(lab, QUICK_START, namespaces=["alice", "bob"])
    r = wt.run(wt.shell_blocks[1], timeout=30)  # the ping, with no namespace made
    assert r.returncode != 0
    with pytest.raises(WalkthroughError, match=r"README\.md:\d+ \(Quick start"):
        r.check()


def test_wgpy_demo_as_in_the_two_commands(lab: Lab) -> None:
    """`./scripts/setup.sh && wgpy demo`: the demo part (setup.sh installs
    packages, which the test machine already has)."""
    require("wg", "ping")
    (block,) = Walkthrough(lab, "The two commands").shell_blocks
    assert "./scripts/setup.sh && wgpy demo\n" in block.text
    assert "CI=true ./scripts/test.sh\n" in block.text
    wgpy = shutil.which("wgpy")
    assert wgpy is not None
    p = subprocess.run([wgpy, "demo"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "3 packets transmitted, 3 received" in p.stdout
    assert "B received 1048576 bytes" in p.stdout
    assert "latest handshake:" in p.stdout
    names = re.findall(r"namespace (\S+), interface (\S+),", p.stdout)
    assert len(names) == 2
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    for ns, ifname in names:
        assert ns not in netns
        assert subprocess.run(
            ["test", "-e", f"/var/run/wireguard/{ifname}.sock"]
        ).returncode != 0


def test_extract_reads_several_hosts_and_a_note() -> None:
    md = (
        "## A\n\n```sh\n# on registry, alice and bob\necho a\n```\n\n"
        "```ini\n# on alice: /etc/wireguard/wg0.conf\n[Interface]\n```\n\n"
        "```sh\n# on the machine: build it\necho b\n```\n\n```sh\n# on the proxy\necho c\n```\n"
    )
    a, ini, machine, proxy = extract(md, "A")
    assert (a.host, a.hosts, a.note) == (None, ("registry", "alice", "bob"), "")
    assert (ini.host, ini.hosts, ini.note) == (None, ("alice",), "/etc/wireguard/wg0.conf")
    assert (machine.hosts, machine.note) == (("machine",), "build it")
    assert (proxy.host, proxy.hosts) == ("proxy", ("proxy",))  # the one-host form as before
