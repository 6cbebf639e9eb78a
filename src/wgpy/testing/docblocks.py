"""The fenced code blocks of the repository's Markdown, for tests that run them.

A walkthrough stays true only if a test runs it as written.  This module
reads ```` ``` ```` fenced blocks from README.md or a page under docs/, with
the heading they sit under and, for blocks meant to be run, where:

- a first line ``# on alice`` (or ``# on registry, alice and bob``) says
  which hosts the block is for; ``# on the machine`` is the machine itself;
- anything after a colon on that line is a comment for a shell block, and
  the file's path for a configuration block:
  ``# on alice: /etc/wireguard/wg0.conf``.

Tests apply their own, documented, substitutions (addresses, interface
names, keys) and run the blocks in a lab's namespaces.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import wgpy

THE_MACHINE = "the machine"

_MARKER = re.compile(r"#\s*on\s+(?P<hosts>[^:]+?)\s*(?::\s*(?P<rest>.*?))?\s*$")
_FENCE = re.compile(r"^(?P<fence>`{3,})(?P<lang>[\w+-]*)\s*$")
_HEADING = re.compile(r"^(?P<level>#{1,6})\s+(?P<title>.+?)\s*$")


@dataclass(frozen=True)
class Block:
    """One fenced block.  ``text`` ends with a newline; ``line`` is 1-based, of the fence."""

    lang: str
    text: str
    line: int
    heading: str

    @property
    def hosts(self) -> list[str]:
        """The hosts its ``# on ...`` first line names (empty without one)."""
        m = _MARKER.fullmatch(self.text.split("\n", 1)[0])
        if m is None:
            return []
        return [h.strip() for h in re.split(r",|\band\b", m.group("hosts")) if h.strip()]

    @property
    def note(self) -> str:
        """What follows the colon of the ``# on ...`` line: a file's path, or a comment."""
        m = _MARKER.fullmatch(self.text.split("\n", 1)[0])
        return (m.group("rest") or "") if m else ""


def repo_file(name: str) -> Path:
    """A file of the source checkout this package was imported from (README.md, docs/...).

    :raises FileNotFoundError: when wgpy runs from an installed copy, not a checkout.
    """
    root = Path(wgpy.__file__).resolve().parents[2]  # src/wgpy/__init__.py -> the checkout
    path = root / name
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: the walkthrough tests need a source checkout")
    return path


def blocks(path: Path, section: str | None = None) -> list[Block]:
    """The fenced blocks of ``path``, in order; with ``section``, only those under the
    heading whose title starts with it, up to the next heading of the same or a
    higher level.

    :raises ValueError: when the section is missing or a fence is never closed.
    """
    lines = path.read_text().splitlines()
    out: list[Block] = []
    heading, level, inside = "", 0, section is None
    found = section is None
    i = 0
    while i < len(lines):
        line = lines[i]
        h = _HEADING.match(line)
        if h:
            title, lvl = h.group("title"), len(h.group("level"))
            if section is not None and title.startswith(section):
                inside, found, level = True, True, lvl
            elif section is not None and inside and lvl <= level:
                inside = False
            heading = title
        f = _FENCE.match(line)
        if f:
            end = next((j for j in range(i + 1, len(lines))
                        if lines[j].startswith(f.group("fence")) and not lines[j].strip("`")),
                       None)
            if end is None:
                raise ValueError(f"{path}:{i + 1}: a fenced block is never closed")
            if inside:
                text = "\n".join(lines[i + 1:end]) + "\n"
                out.append(Block(f.group("lang"), text, i + 1, heading))
            i = end + 1
            continue
        i += 1
    if not found:
        raise ValueError(f"{path}: no section {section!r}")
    return out
