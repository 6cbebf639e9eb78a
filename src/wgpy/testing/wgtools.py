"""Helpers for the wgpy-vs-wg comparisons: real devices (wireguard-go) in namespaces."""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from dataclasses import dataclass

from wgpy.testing.lab import Lab

WGPY = [sys.executable, "-m", "wgpy.tools.cli"]


@dataclass
class Dev:
    lab: Lab
    ns: str | None
    name: str

    def wg(self, *args: str, check: bool = False, env: dict[str, str] | None = None,
           input: bytes | None = None) -> tuple[int, str, str]:
        p = self.lab.run(self.ns, ["wg", *args], check=check, env=env, input=input)
        return p.returncode, p.stdout, p.stderr

    def wgpy(self, *args: str, check: bool = False, env: dict[str, str] | None = None,
             input: bytes | None = None) -> tuple[int, str, str]:
        p = self.lab.run(self.ns, [*WGPY, *args], check=check, env=env, input=input)
        return p.returncode, p.stdout, p.stderr


def start_wireguard_go(lab: Lab, ns: str) -> str:
    name = lab.wg_name()
    lab.popen(ns, ["wireguard-go", "-f", name], env={"WG_PROCESS_FOREGROUND": "1"},
              log=f"{name}.log")
    lab.wait_socket(name)
    return name


def peer_blocks(text: str) -> list[str]:
    """Split pretty/showconf output into blocks (wireguard-go's peer order is random)."""
    blocks = [b.strip("\n") for b in text.split("\n\n")]
    return blocks[:1] + sorted(blocks[1:])


def same_unordered(a: str, b: str) -> bool:
    return peer_blocks(a) == peer_blocks(b)


def normalise_time(text: str) -> str:
    return re.sub(r"latest handshake: .*", "latest handshake: T", text)


def eventually_equal(get_a: Callable[[], str], get_b: Callable[[], str], tries: int = 4) -> None:
    """Compare outputs that can race with other tests' sockets: a, b, a again."""
    last = ("", "")
    for _ in range(tries):
        a1, b, a2 = get_a(), get_b(), get_a()
        if b in (a1, a2):
            return
        last = (a1, b)
    assert last[1] == last[0]
