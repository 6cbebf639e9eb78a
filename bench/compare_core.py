"""Instruction counts of the core's hot paths in two source trees, side by side.

    python3 bench/compare_core.py OLD_SRC NEW_SRC

Each SRC is a directory holding the ``wgpy`` package (``src`` of a checkout)
with ``wgpy.testing.memnet`` in it.  Every phase of ``bench/core.py`` runs
under ``valgrind --tool=callgrind`` with ``PYTHONPATH=SRC``; the ``setup``
phase is subtracted, so the figures are instructions per handshake and per
packet (one direction: encapsulate + decapsulate).  Instruction counts are
the same from run to run whatever else the machine does, which wall-clock
figures on a shared machine are not.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent


def instructions(src: Path, phase: str) -> tuple[int, int]:
    """(instructions, how many of the phase's unit it did: handshakes or packets)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "callgrind.out"
        env = {**os.environ, "PYTHONPATH": str(src), "PYTHONHASHSEED": "0"}
        p = subprocess.run(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
             sys.executable, str(HERE / "core.py"), phase],
            capture_output=True, text=True, env=env, timeout=1800, check=False,
        )
        if p.returncode != 0:
            raise SystemExit(f"{src} {phase}: exit {p.returncode}\n{p.stderr[-2000:]}")
        m = re.search(r"^summary:\s+(\d+)", out.read_text(), re.M)
        if m is None:
            raise SystemExit(f"{src} {phase}: no summary in callgrind's output")
        units = re.search(r"^(\d+) ", p.stdout, re.M)
        return int(m.group(1)), int(units.group(1)) if units else 0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    trees = [Path(a).resolve() for a in args]
    rows = []
    for src in trees:
        setup, _ = instructions(src, "setup")
        hs_instr, hs_n = instructions(src, "handshake")
        pk_instr, pk_n = instructions(src, "data")
        hs = (hs_instr - setup) / hs_n
        pk = (pk_instr - setup) / pk_n
        rows.append((src, hs, pk))
    print(f"{'tree':50} {'instr/handshake':>16} {'instr/packet':>13}")
    for src, hs, pk in rows:
        print(f"{str(src)[-50:]:50} {hs:16,.0f} {pk:13,.0f}")
    (_, hs0, pk0), (_, hs1, pk1) = rows
    print(f"{'new / old':50} {hs1 / hs0:16.3f} {pk1 / pk0:13.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
