"""The CI smoke of the fuzz targets: seeds, saved regressions, and bounded Hypothesis runs.

The long run is ``python3 -m wgpy.testing.fuzz --inputs 1000000`` (see run.py);
this file keeps every input it ever found failing (``regressions/``) and
explores a little on each test run, within a few seconds per target.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wgpy.testing import fuzz
from wgpy.testing import fuzztargets as targets

REGRESSIONS = Path(__file__).parent / "regressions"
NAMES = list(targets.TARGETS)
# Per target: cheap parsers get more examples than the DNS registry or the device.
EXAMPLES = {"messages": 300, "device": 300, "tun": 200, "uapi_set": 300, "uapi_get": 200,
            "config": 200, "registry": 150, "proxy_config": 200}


def _regression_cases() -> list[tuple[str, Path]]:
    out = []
    for name in NAMES:
        d = REGRESSIONS / name
        if d.is_dir():
            out += [(name, f) for f in sorted(d.iterdir()) if f.is_file()]
    return out


@pytest.mark.parametrize("name", NAMES)
def test_seeds(name: str) -> None:
    for s in targets.seeds(name):
        targets.TARGETS[name](s)


@pytest.mark.parametrize(("name", "path"), _regression_cases(),
                         ids=[f"{n}/{p.name}" for n, p in _regression_cases()])
def test_regression_inputs(name: str, path: Path) -> None:
    targets.TARGETS[name](path.read_bytes())


@st.composite
def mutated(draw: st.DrawFn, name: str) -> bytes:
    base = bytearray(draw(st.sampled_from(targets.seeds(name))))
    for pos, value in draw(st.lists(st.tuples(st.integers(0, 4096), st.integers(0, 255)),
                                    max_size=6)):
        if base:
            base[pos % len(base)] = value
    cut = draw(st.integers(0, len(base)))
    tail = draw(st.binary(max_size=24))
    return bytes(base[:cut]) + tail + bytes(base[cut:]) if draw(st.booleans()) else bytes(
        base[:cut])


@st.composite
def text_lines(draw: st.DrawFn) -> bytes:
    """key=value lines from the UAPI and config vocabularies, with odd values."""
    keys = ["private_key", "listen_port", "fwmark", "replace_peers", "public_key",
            "remove", "update_only", "preshared_key", "endpoint",
            "persistent_keepalive_interval", "replace_allowed_ips", "allowed_ip",
            "protocol_version", "PrivateKey", "ListenPort", "FwMark", "PublicKey",
            "AllowedIPs", "Endpoint", "PersistentKeepalive", "[Interface]", "[Peer]",
            "Address", "MTU", "DNS", "Table"]
    values = st.one_of(
        st.sampled_from(["", "true", "false", "0", "1", "65535", "65536", "-1", "0x10",
                         "a" * 64, "0" * 64, targets.B64, "10.0.0.1:1", "[fd00::1]:1",
                         "[fd00::1%eth0]:51820", "10.0.0.0/8", "::/0", "1.2.3.4/33",
                         "\u00b2", "\u0661\u0662", "off", "auto", "\x00"]),
        st.text(max_size=20))
    lines = draw(st.lists(st.tuples(st.sampled_from(keys), values), max_size=12))
    return "\n".join(f"{k}={v}" if not k.startswith("[") else k for k, v in lines).encode()


def _fuzz(name: str) -> None:
    strategy = st.one_of(st.binary(max_size=300), mutated(name))
    if name in ("uapi_set", "uapi_get", "config", "proxy_config"):
        strategy = st.one_of(strategy, text_lines())

    @settings(max_examples=EXAMPLES[name], deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(strategy)
    def run(data: bytes) -> None:
        targets.TARGETS[name](data)

    run()


@pytest.mark.parametrize("name", NAMES)
def test_hypothesis_smoke(name: str) -> None:
    _fuzz(name)


def test_runner_smoke(tmp_path: Path) -> None:
    """The long-run entry point works (built-in engine, a few inputs per target)."""
    out = tmp_path / "summary.json"
    assert fuzz.main(["--inputs", "800", "--engine", "mutate", "--json", str(out),
                      "--targets", "messages,device,uapi_get,proxy_config",
                      "--regressions", str(REGRESSIONS)]) == 0
    assert '"crashes": 0' in out.read_text()
