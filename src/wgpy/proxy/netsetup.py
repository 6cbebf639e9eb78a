"""The one executor for :mod:`wgpy.proxy.rules` commands.

Commands run in order; a failure stops the run with :class:`SetupError`
carrying the command and the tool's own message.  ``apply_setup`` undoes a
half-finished setup so a failed ``setup`` leaves the system as it was.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable

from .config import ProxyConfig
from .rules import Command, setup_commands, teardown_commands

Runner = Callable[[Command], tuple[int, str]]


class SetupError(RuntimeError):
    pass


def run_subprocess(cmd: Command) -> tuple[int, str]:
    try:
        p = subprocess.run(
            list(cmd.argv), input=cmd.stdin, capture_output=True, text=True, timeout=30
        )
    except FileNotFoundError:
        return 127, f"{cmd.argv[0]}: command not found"
    except subprocess.TimeoutExpired:
        return 124, f"{cmd.argv[0]}: timed out"
    return p.returncode, (p.stderr or p.stdout).strip()


def run_commands(cmds: list[Command], runner: Runner = run_subprocess) -> None:
    """Run ``cmds`` in order; raise :class:`SetupError` on the first real failure."""
    for c in cmds:
        rc, err = runner(c)
        if rc != 0 and not any(frag in err for frag in c.ok_if):
            raise SetupError(f"`{' '.join(c.argv)}` failed ({rc}): {err}")


def apply_setup(cfg: ProxyConfig, runner: Runner = run_subprocess) -> None:
    """Install; on failure remove whatever part was installed, then raise."""
    try:
        run_commands(setup_commands(cfg), runner)
    except SetupError:
        for c in teardown_commands(cfg):
            runner(c)
        raise


def apply_teardown(cfg: ProxyConfig, runner: Runner = run_subprocess) -> None:
    run_commands(teardown_commands(cfg), runner)
