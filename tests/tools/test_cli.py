"""The ``wgpy`` dispatcher: table, help pages, lazy loading, and the demo."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from wgpy.testing.lab import Lab, require
from wgpy.testing.wgtools import WGPY
from wgpy.tools import cli


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*WGPY, *args], capture_output=True, text=True, timeout=60)


def test_usage_lists_every_command() -> None:
    p = run("--help")
    assert p.returncode == 0
    for name in cli.COMMANDS:
        assert f"  {name}: " in p.stdout
    p = run("frobnicate")
    assert p.returncode == 1 and "Invalid subcommand: `frobnicate'" in p.stderr
    assert run("--version").stdout.startswith("wgpy v")


@pytest.mark.parametrize("name", [n for n in cli.COMMANDS
                                  if n not in ("registry", "discover", "proxy")])
def test_help_reads_like_a_man_page(name: str) -> None:
    p = run(name, "--help")
    assert p.returncode == 0, p.stderr
    text = p.stdout
    assert len(text.splitlines()) >= 5, text
    assert ("SYNOPSIS" in text and "DESCRIPTION" in text) or "usage:" in text.lower(), text
    assert "Traceback" not in p.stderr


def test_import_is_lazy() -> None:
    code = ("import sys, wgpy.tools.cli; "
            "print([m for m in sys.modules if m.startswith(('wgpy.discovery', 'wgpy.proxy', "
            "'wgpy.tools.wg_quick', 'wgpy.tools.demo'))])")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert p.stdout.strip() == "[]", p.stdout + p.stderr


def test_missing_module_is_a_clear_error(monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(cli.COMMANDS, "proxy",
                        cli.Command("wgpy.no_such_module_here:main", "x", False))
    assert cli.main(["proxy", "--help"]) == 1
    err = capsys.readouterr().err
    assert "the `proxy' command is not available" in err and "Traceback" not in err


def test_other_engineers_commands_get_argv_after_the_name(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    mod = tmp_path / "fake_wgpy_plugin.py"
    mod.write_text("SEEN = []\ndef main(argv):\n    SEEN.append(argv)\n    return 3\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(cli.COMMANDS, "registry",
                        cli.Command("fake_wgpy_plugin:main", "x", False))
    assert cli.main(["registry", "--port", "5353"]) == 3
    assert sys.modules["fake_wgpy_plugin"].SEEN == [["--port", "5353"]]


def test_demo(lab: Lab) -> None:
    """The whole demo with wireguard-go on both sides; it must clean up after itself."""
    require("wireguard-go", "ping")
    p = lab.run(None, [*WGPY, "demo", "--impl", "wireguard-go"], check=False, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "3 received" in p.stdout and "B received 1048576 bytes" in p.stdout
    assert p.stdout.count("latest handshake:") == 2
    assert "Torn down" in p.stdout
    # What this demo made (its own names: other tests may run demos at once).
    sides = re.findall(r"^Side [AB]: namespace (\S+), interface (\S+),", p.stdout, re.M)
    assert len(sides) == 2, p.stdout
    namespaces = lab.run(None, "ip netns list").stdout.split()
    for ns, ifname in sides:
        assert ns not in namespaces
        assert not Path(f"/var/run/wireguard/{ifname}.sock").exists()
