"""Origin health: pure up/down bookkeeping plus a small asyncio prober.

``HealthBook`` is sans-IO: it only counts consecutive results per target and
flips a target down after ``fall`` failures and up after ``rise`` successes.
Unknown targets count as up, so a fresh proxy serves before its first probe.
Connection failures seen while proxying are fed in too (passive checks).
``probe()`` is the I/O half: one TCP connect with a timeout.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterable
from dataclasses import dataclass

from wgpy.control.endpoint import Endpoint, format_endpoint

Target = Endpoint  # an origin's address and the port probed


@dataclass
class _State:
    up: bool = True
    fails: int = 0
    oks: int = 0
    last_change: float = 0.0
    checks: int = 0


class HealthBook:
    def __init__(self, fall: int = 2, rise: int = 1) -> None:
        self.fall = fall
        self.rise = rise
        self._states: dict[Target, _State] = {}

    def set_targets(self, targets: Iterable[Target]) -> None:
        """Track exactly ``targets``, keeping the state of those already known."""
        keep = dict.fromkeys(targets)
        self._states = {t: self._states.get(t, _State()) for t in keep}

    def targets(self) -> list[Target]:
        return list(self._states)

    def record(self, target: Target, ok: bool, now: float) -> bool:
        """Feed one probe or connect result; return True if up/down changed."""
        st = self._states.get(target)
        if st is None:
            return False
        st.checks += 1
        if ok:
            st.oks, st.fails = st.oks + 1, 0
            if not st.up and st.oks >= self.rise:
                st.up, st.last_change = True, now
                return True
        else:
            st.fails, st.oks = st.fails + 1, 0
            if st.up and st.fails >= self.fall:
                st.up, st.last_change = False, now
                return True
        return False

    def is_up(self, target: Target) -> bool:
        st = self._states.get(target)
        return True if st is None else st.up

    def snapshot(self) -> dict[str, dict[str, object]]:
        return {
            format_endpoint(h, p): {
                "up": st.up,
                "consecutive_failures": st.fails,
                "checks": st.checks,
            }
            for (h, p), st in self._states.items()
        }


async def probe(target: Target, timeout: float) -> bool:
    """One TCP connect to ``target``; True if it was accepted within ``timeout``."""
    loop = asyncio.get_running_loop()
    family = socket.AF_INET6 if ":" in target[0] else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        await asyncio.wait_for(loop.sock_connect(sock, target), timeout)
        return True
    except (OSError, TimeoutError):
        return False
    finally:
        sock.close()
