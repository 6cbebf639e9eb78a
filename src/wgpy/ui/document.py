"""A wg-quick file as the console edits it: line-preserving, pure.

Theory of operation: the console changes a configuration file by whole
``[Peer]`` blocks and leaves every other line as it was written (comments,
hooks, spacing: a file is also edited by hand).  ``parse`` splits the text
into peer blocks with their line ranges and checks the whole file with
``control.config.parse_quick_config``; each edit returns new text, which is
parsed again before anyone writes it, so an edit can never produce a file
that wg-quick would refuse.

Two conventions of the console live in the file itself, as comments that
wg(8) and wg-quick ignore:

- a peer's name is a ``# Name = NAME`` line inside its block;
- a disabled peer is its block with every line prefixed by ``#~ ``: it
  stays in the file (``wg-quick up`` does not load it) and is re-enabled by
  removing the prefix.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from wgpy.control.config import QuickConfig, parse_config, parse_quick_config
from wgpy.control.keys import InvalidKey, Key
from wgpy.protocol.errors import ConfigError

DISABLED = "#~ "
_NAME_RE = re.compile(r"^#\s*name\s*=\s?(.*)$", re.IGNORECASE)
_HEADER_RE = re.compile(r"^\s*\[([A-Za-z]+)\]\s*(#.*)?$")
_DISABLED_PEER_RE = re.compile(r"^#~ ?\s*\[peer\]", re.IGNORECASE)
_KEY_RE = re.compile(r"^\s*([A-Za-z]+)\s*=\s*(.*?)\s*(#.*)?$")
NAME_MAX = 64


@dataclass
class PeerBlock:
    """One ``[Peer]`` block: lines ``start`` to ``end`` (exclusive, 0-based)."""

    start: int
    end: int
    enabled: bool
    public_key: str
    name: str = ""
    allowed_ips: list[str] = field(default_factory=list)
    preshared_key: str | None = None

    @property
    def lineno(self) -> int:
        return self.start + 1


@dataclass
class Document:
    path: Path
    interface: str
    text: str
    quick: QuickConfig
    peers: list[PeerBlock]

    def find(self, public_key: str) -> PeerBlock:
        """:raises KeyError: no such peer in the file."""
        for p in self.peers:
            if p.public_key == public_key:
                return p
        raise KeyError(public_key)


def check_name(name: str) -> str:
    """A peer name fit for the file and the page: printable, one line, bounded.

    :raises ValueError: with the reason.
    """
    name = name.strip()
    if not name:
        raise ValueError("a name is required")
    if len(name) > NAME_MAX:
        raise ValueError(f"the name is longer than {NAME_MAX} characters")
    if any(not c.isprintable() for c in name):
        raise ValueError("the name contains a control character or a line break")
    return name


def _lines(text: str) -> list[str]:
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def _join(lines: list[str]) -> str:
    return "".join(line + "\n" for line in lines)


def _is_header(line: str) -> bool:
    return _HEADER_RE.match(line) is not None


def parse(text: str, path: Path, interface: str) -> Document:
    """Parse and check a whole file (enabled and disabled peers).

    :raises ConfigError: naming the file, the line and the reason.
    """
    quick = parse_quick_config(text, path, interface)
    lines = _lines(text)
    blocks: list[PeerBlock] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        m = _HEADER_RE.match(line)
        if m and m.group(1).lower() == "peer":
            end = i + 1
            while end < len(lines) and not _is_header(lines[end]) and not _DISABLED_PEER_RE.match(
                    lines[end]):
                end += 1
            blocks.append(_block(lines, i, end, True, path))
            i = end
        elif _DISABLED_PEER_RE.match(line):
            end = i + 1
            while end < len(lines) and lines[end].startswith("#~") and not _DISABLED_PEER_RE.match(
                    lines[end]):
                end += 1
            blocks.append(_block(lines, i, end, False, path))
            i = end
        else:
            i += 1
    seen: dict[str, int] = {}
    for b in blocks:
        if b.public_key in seen:
            raise ConfigError(
                f"the peer {b.public_key} is also at line {seen[b.public_key]}: the console "
                "needs each peer once (merge or delete one of them)", str(path), b.lineno)
        seen[b.public_key] = b.lineno
    return Document(path, interface, text, quick, blocks)


def _uncomment(line: str) -> str:
    if line.startswith(DISABLED):
        return line[len(DISABLED):]
    return line[2:] if line.startswith("#~") else line


def _trailing(line: str) -> bool:
    text = line.strip()
    return not text or text.startswith("#")


def _block(lines: list[str], start: int, end: int, enabled: bool, path: Path) -> PeerBlock:
    # A block ends at its last setting: blank lines and comments after it
    # (often about the next peer) belong to what follows.
    while end - 1 > start and _trailing(lines[end - 1] if enabled else _uncomment(lines[end - 1])):
        end -= 1
    body = [(n + 1, lines[n] if enabled else _uncomment(lines[n])) for n in range(start, end)]
    if not enabled:
        # Checked as wg(8) checks an enabled one, with the file's line numbers,
        # so enabling it later cannot fail on its text.
        parse_config("", str(path), append=True, lines=body)
    block = PeerBlock(start, end, enabled, "")
    for _, line in body:
        nm = _NAME_RE.match(line.strip())
        if nm:
            block.name = nm.group(1).strip()
            continue
        km = _KEY_RE.match(line)
        if not km:
            continue
        key, value = km.group(1).lower(), km.group(2)
        if key == "publickey":
            block.public_key = value
        elif key == "allowedips":
            block.allowed_ips += [v.strip() for v in value.split(",") if v.strip()]
        elif key == "presharedkey":
            block.preshared_key = value
    try:
        block.public_key = Key.from_base64(block.public_key).to_base64()
    except InvalidKey:
        raise ConfigError("A peer is missing a public key", str(path), start + 1) from None
    return block


# -- edits: each returns the new text, checked by parse() before it is written --


def add_peer(doc: Document, name: str, public_key: Key, preshared_key: Key | None,
             allowed_ips: list[str]) -> str:
    lines = _lines(doc.text)
    while lines and not lines[-1].strip():
        lines.pop()
    block = ["", "[Peer]", f"# Name = {check_name(name)}", f"PublicKey = {public_key.to_base64()}"]
    if preshared_key is not None:
        block.append(f"PresharedKey = {preshared_key.to_base64()}")
    block.append(f"AllowedIPs = {', '.join(allowed_ips)}")
    return _checked(doc, _join(lines + block))


def set_enabled(doc: Document, public_key: str, enabled: bool) -> str:
    b = doc.find(public_key)
    if b.enabled == enabled:
        return doc.text
    lines = _lines(doc.text)
    for n in range(b.start, b.end):
        if enabled:
            lines[n] = _uncomment(lines[n])
        else:
            lines[n] = (DISABLED + lines[n]) if lines[n] else "#~"
    return _checked(doc, _join(lines))


def remove_peer(doc: Document, public_key: str) -> str:
    b = doc.find(public_key)
    lines = _lines(doc.text)
    end = b.end
    # Take one blank separator with the block, so deletions leave no gaps.
    if b.start > 0 and not lines[b.start - 1].strip():
        start = b.start - 1
    else:
        start = b.start
        while end < len(lines) and not lines[end].strip():
            end += 1
    return _checked(doc, _join(lines[:start] + lines[end:]))


def rename_peer(doc: Document, public_key: str, name: str) -> str:
    b = doc.find(public_key)
    prefix = "" if b.enabled else DISABLED
    new = f"{prefix}# Name = {check_name(name)}"
    lines = _lines(doc.text)
    for n in range(b.start, b.end):
        text = lines[n] if b.enabled else _uncomment(lines[n])
        if _NAME_RE.match(text.strip()):
            lines[n] = new
            break
    else:
        lines.insert(b.start + 1, new)
    return _checked(doc, _join(lines))


def _checked(doc: Document, text: str) -> str:
    parse(text, doc.path, doc.interface)
    return text
