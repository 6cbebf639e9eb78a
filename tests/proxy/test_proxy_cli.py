"""The command line: help, exit codes, and errors without tracebacks."""

from __future__ import annotations

from pathlib import Path

import pytest

from wgpy.proxy.cli import main

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
