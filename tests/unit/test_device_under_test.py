"""One environment variable, WGPY_TEST_DEVICE, picks the peer of every lab."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from wgpy.testing.lab import LabError, device_under_test

LABS = ("import wgpy.testing.natlab as n, wgpy.testing.proxylab as p; "
        "print(n.DEVICE, p.tunnel_tools()[-1])")


def _labs_choose(value: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "WGPY_TEST_DEVICE"}
    if value is not None:
        env["WGPY_TEST_DEVICE"] = value
    return subprocess.run([sys.executable, "-c", LABS], env=env, capture_output=True,
                          text=True, timeout=60)


@pytest.mark.parametrize(("value", "chosen"), [
    (None, "wgpyd"), ("wgpyd", "wgpyd"), ("wireguard-go", "wireguard-go")])
def test_every_lab_follows_the_one_variable(value: str | None, chosen: str) -> None:
    p = _labs_choose(value)
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == [chosen, chosen]


def test_an_unknown_device_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WGPY_TEST_DEVICE", "boringtun")
    with pytest.raises(LabError, match="WGPY_TEST_DEVICE='boringtun': expected one of "
                                       "wgpyd, wireguard-go"):
        device_under_test()
