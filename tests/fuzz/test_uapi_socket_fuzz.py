"""The live UAPI socket under garbage: wgpyd keeps serving, and leaks nothing.

A few hundred connections to a real ``wgpyd`` carry mutated set requests,
random bytes, half requests and oversized lines; each gets an answer or a
closed connection within a bounded time, the daemon stays up, a ``get``
still parses after every batch, and its open file descriptors return to
what they were.
"""

from __future__ import annotations

import os
import random
import time
from pathlib import Path

import pytest

from wgpy.control import uapi
from wgpy.testing import fuzztargets as targets
from wgpy.testing.fuzz import mutate
from wgpy.testing.lab import Lab, require
from wgpy.testing.nodes import start, uapi_exchange

pytestmark = pytest.mark.netns

RUN = Path("/var/run/wireguard")


def payloads(r: random.Random, n: int) -> list[bytes]:
    sets = [b"set=1\n" + s + b"\n\n" for s in targets.seeds("uapi_set")]
    pool = sets + [b"get=1\n\n"]
    out: list[bytes] = []
    for i in range(n):
        kind = i % 6
        if kind == 0:
            out.append(r.randbytes(r.randint(0, 200)))
        elif kind == 1:
            out.append(b"set=1\n" + r.randbytes(r.randint(0, 100)))  # no terminator
        elif kind == 2:
            out.append(b"set=1\nlisten_port=" + b"9" * r.randint(1, 70000) + b"\n\n")
        else:
            out.append(mutate(r, pool))
    return out


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_uapi_socket_survives_garbage(lab: Lab) -> None:
    require("wg")
    ns = lab.netns("ufz")
    node = start(lab, ns, "wgpyd", extra_env={"LOG_LEVEL": "error"})
    pid = lab.procs[-1].pid
    uapi.parse_get(uapi_exchange(node.ifname, b"get=1\n\n", timeout=2.0).decode())
    fds = fd_count(pid)
    r = random.Random(7)
    t0 = time.monotonic()
    answered = closed = 0
    for i, p in enumerate(payloads(r, 300)):
        reply = uapi_exchange(node.ifname, p, timeout=2.0)
        if reply:
            answered += 1
            assert reply.endswith(b"\n\n") and b"errno=" in reply, (p[:200], reply[:200])
        else:
            closed += 1
        if i % 50 == 49:
            assert Path(f"/proc/{pid}").exists(), "wgpyd died"
            text = uapi_exchange(node.ifname, b"get=1\n\n", timeout=2.0).decode()
            assert text.endswith("errno=0\n\n"), text[-200:]
            uapi.parse_get(text)
        assert time.monotonic() - t0 < 90
    lab.wait_for("fds back to the baseline", lambda: fd_count(pid) <= fds, timeout=5)
    assert answered > 50 and closed > 10
    assert "Traceback" not in node.logtext()


def test_non_ascii_digits_get_einval_on_the_socket(lab: Lab) -> None:
    """``listen_port=²`` passes str.isdigit() but not int(): the daemon must answer
    errno=-22 as for any bad value (it used to drop the connection unanswered)."""
    require("wg")
    ns = lab.netns("ufz")
    node = start(lab, ns, "wgpyd", extra_env={"LOG_LEVEL": "error"})
    for line in ("listen_port=\u00b2", "fwmark=\u00b3", "listen_port=\u0661\u0662"):
        reply = uapi_exchange(node.ifname, f"set=1\n{line}\n\n".encode())
        assert reply == b"errno=-22\n\n", (line, reply)
