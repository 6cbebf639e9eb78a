"""``wgpy systemd``: the systemd units shipped with wgpy, installed or printed.

The units (``src/wgpy/systemd/*.service``, package data) name the programs as
``/usr/local/bin/wgpy`` and ``/usr/local/bin/wgpyd``, where ``pip install``
puts them for the system's Python.  ``install`` writes them with the
directory of *this* installation's programs instead (a virtualenv, pyenv,
a distribution package), so the units run the wgpy that installed them.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import sysconfig
from importlib import resources
from pathlib import Path

PROG = "wgpy systemd"
SHIPPED_BINDIR = "/usr/local/bin/"
UNIT_DIR = Path("/etc/systemd/system")
PROGRAMS = ("wgpy", "wgpyd")

DESCRIPTION = """\
The systemd units shipped with wgpy:

  wgpy@.service            an interface on wgpyd from /etc/wireguard/IF.conf
                           (systemctl enable --now wgpy@wg0)
  wgpy-registry@.service   wgpy registry for IF, options in /etc/wgpy/registry-IF.args
  wgpy-discover@.service   wgpy discover for IF, options in /etc/wgpy/discover-IF.args
  wgpy-proxy.service       wgpy proxy from /etc/wgpy/proxy.conf (reload: re-read)
  wgpy-exporter.service    wgpy exporter on :9586

Each is Type=notify (ready once it serves), restarts on failure and runs
with only the capabilities it needs.  `install` writes them to DIR with the
paths of this installation's wgpy and wgpyd; then:

  systemctl daemon-reload && systemctl enable --now wgpy@wg0"""


def units() -> dict[str, str]:
    """The shipped units: name -> text, as shipped."""
    folder = resources.files("wgpy").joinpath("systemd")
    return {p.name: p.read_text() for p in sorted(folder.iterdir(), key=lambda p: p.name)
            if p.name.endswith(".service")}


def bindir() -> Path:
    """Where this installation's ``wgpy`` and ``wgpyd`` are."""
    scripts = Path(sysconfig.get_path("scripts"))
    if all((scripts / p).is_file() for p in PROGRAMS):
        return scripts
    found = shutil.which("wgpy")
    return Path(found).resolve().parent if found else scripts


def rendered(text: str, programs: Path) -> str:
    return text.replace(SHIPPED_BINDIR, str(programs).rstrip("/") + "/")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=DESCRIPTION,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    i = sub.add_parser("install", help="write the units to DIR (default /etc/systemd/system)")
    i.add_argument("--dir", type=Path, default=UNIT_DIR, help="where to write them")
    i.add_argument("--bindir", type=Path, help="the directory of wgpy and wgpyd "
                   "(default: this installation's)")
    sub.add_parser("list", help="list the units")
    s = sub.add_parser("show", help="print a unit as install would write it")
    s.add_argument("unit")
    return p


def main(argv: list[str] | None = None) -> int:
    a = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    shipped = units()
    if a.command == "list":
        for name in shipped:
            print(name)
        return 0
    if a.command == "show":
        if a.unit not in shipped:
            print(f"{PROG}: no unit {a.unit!r} ({', '.join(shipped)})", file=sys.stderr)
            return 2
        sys.stdout.write(rendered(shipped[a.unit], bindir()))
        return 0
    if a.command != "install":
        _parser().print_help()
        return 2
    programs = a.bindir or bindir()
    missing = [p for p in PROGRAMS if not os.access(programs / p, os.X_OK)]
    if missing:
        print(f"{PROG}: {', '.join(str(programs / m) for m in missing)}: not an executable "
              "(give the directory of wgpy and wgpyd with --bindir)", file=sys.stderr)
        return 1
    try:
        a.dir.mkdir(parents=True, exist_ok=True)
        for name, text in shipped.items():
            (a.dir / name).write_text(rendered(text, programs))
            print(f"wrote {a.dir / name}")
    except OSError as e:
        print(f"{PROG}: {a.dir}: {e.strerror or e}", file=sys.stderr)
        return 1
    print("next: systemctl daemon-reload; systemctl enable --now wgpy@wg0 (and the others "
          "you use; docs/operations.md)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
