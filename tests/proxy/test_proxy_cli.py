"""The command line: help, exit codes, and errors without tracebacks."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from wgpy.protocol.errors import ConfigError
from wgpy.proxy import control
from wgpy.proxy.cli import main
from wgpy.proxy.config import Settings, control_socket

OK = "[Rule]\nName = web\nPrefix = 10.77.0.0/24\nOrigin = 10.99.0.2:8080\nProxyProtocol = v2\n"


def test_help_reads_like_a_man_page(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as ei:
        main(["--help"])
    assert ei.value.code == 0
    out = capsys.readouterr().out
    for section in ("usage: wgpy proxy", "commands:", "configuration", "signals:",
                    "exit status:", "SIGHUP", "README section"):  # fmt: skip
        assert section in out
    assert main([]) == 2


def test_bad_config_names_the_line_and_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    conf = tmp_path / "p.conf"
    conf.write_text(OK.replace("10.99.0.2:8080", "10.99.0.2:http"))
    for argv in (
        ["--config", str(conf)],
        ["run", "--config", str(conf)],
        ["setup", "--config", str(conf), "--print"],
        ["check", "-c", str(conf)],
    ):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert f"{conf}:4: origin: 'http' is not an integer" in err and "Traceback" not in err


def test_check_and_print(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    conf = tmp_path / "p.conf"
    conf.write_text(OK)
    assert main(["check", "--config", str(conf)]) == 0
    out = capsys.readouterr().out
    assert "rule web (line 1): tcp 10.77.0.0/24 all ports -> 10.99.0.2:8080, PROXY v2" in out
    assert main(["setup", "--config", str(conf), "--print"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("nft -f - <<'EOF'\n") and "ip -4 rule add fwmark 0x2a0" in out


def test_usage_errors_and_missing_proxy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["setup"]) == 2
    assert "--config" in capsys.readouterr().err
    assert main(["status", "--socket", str(tmp_path / "none.sock")]) == 1
    err = capsys.readouterr().err
    assert "no such socket (is the proxy running?)" in err and "Traceback" not in err


@contextlib.contextmanager
def fake_proxy(path: Path, pid: int = 4242) -> Iterator[list[str]]:
    """A control socket answering as a running proxy does; yields the requests."""
    seen: list[str] = []
    ready = threading.Event()
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()

    async def handler(req: str) -> dict[str, object]:
        seen.append(req)
        if req == "reload":
            return {"ok": False, "error": "p.conf:5: origin: 80800 is out of range 1..65535",
                    "config": "/somewhere/else.conf"}  # fmt: skip
        return {"pid": pid, "rules": {}, "origins": {}}

    async def main() -> None:
        server = await control.serve(str(path), handler)
        ready.set()
        async with server:
            await stop.wait()

    t = threading.Thread(target=lambda: loop.run_until_complete(main()), daemon=True)
    t.start()
    try:
        assert ready.wait(10)
        yield seen
    finally:
        loop.call_soon_threadsafe(stop.set)
        t.join(10)
        loop.close()


BROKEN = "[Proxy]\nControlSocket = {sock}  # ours\nnot a setting\n[Rule]\nOrigin = 10.9.0.2:80800\n"


def test_control_socket_is_read_leniently(tmp_path: Path) -> None:
    conf = tmp_path / "p.conf"
    conf.write_text(BROKEN.format(sock="/run/x.sock"))
    assert control_socket(conf) == "/run/x.sock"
    conf.write_text("[Rule]\nControlSocket = /run/not-here.sock\n[Proxy]\nMark = ???\n")
    assert control_socket(conf) == Settings().control_socket  # only [Proxy] counts
    conf.write_text("[Proxy]\n\nControlSocket = x.sock\n")
    with pytest.raises(ConfigError, match=r"p.conf:3: controlsocket: .* absolute path"):
        control_socket(conf)
    with pytest.raises(ConfigError, match="cannot read"):
        control_socket(tmp_path / "missing.conf")


def test_status_and_reload_reach_the_proxy_while_the_file_is_broken(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sock, conf = tmp_path / "ctl.sock", tmp_path / "p.conf"
    conf.write_text(BROKEN.format(sock=sock))
    with fake_proxy(sock) as seen:
        assert main(["status", "--config", str(conf), "--json"]) == 0
        assert '"pid": 4242' in capsys.readouterr().out
        assert main(["reload", "--config", str(conf)]) == 1
        err = capsys.readouterr().err
        assert err == (
            f"wgpy proxy: note: the proxy on {sock} reads /somewhere/else.conf, not {conf}\n"
            "wgpy proxy: reload refused, the running configuration stays: "
            "p.conf:5: origin: 80800 is out of range 1..65535\n"
        )
    assert seen == ["status", "reload"]


def test_teardown_refuses_while_a_proxy_serves_the_setup(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sock, conf = tmp_path / "ctl.sock", tmp_path / "p.conf"
    conf.write_text(f"[Proxy]\nControlSocket = {sock}\n" + OK)
    with fake_proxy(sock, pid=777):
        assert main(["teardown", "--config", str(conf)]) == 1
    assert capsys.readouterr().err == (
        f"wgpy proxy: a proxy (pid 777) still serves this setup on {sock}: "
        "stop it first (SIGTERM), or use --force\n"
    )
    # --print only shows the commands; it never needs the proxy gone.
    with fake_proxy(sock):
        assert main(["teardown", "--config", str(conf), "--print"]) == 0
    assert "nft delete table inet wgpy_proxy" in capsys.readouterr().out


def test_probe_tells_no_proxy_from_a_live_one(tmp_path: Path) -> None:
    assert control.probe(str(tmp_path / "missing.sock")) is None
    stale = tmp_path / "stale.sock"  # what a proxy killed with SIGKILL leaves
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(stale))
    s.close()
    assert control.probe(str(stale)) is None
    with fake_proxy(tmp_path / "live.sock", pid=9):
        assert control.probe(str(tmp_path / "live.sock")) == {"pid": 9, "rules": {}, "origins": {}}
