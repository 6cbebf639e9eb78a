"""Run the README's walkthroughs as written, in network namespaces.

A walkthrough is the fenced shell blocks (```sh and ```console) under one
README heading, in order.  The test runs them with ``bash -e`` after one
documented substitution of names, so the README cannot drift from the code.

Usage (with the ``lab`` fixture)::

    wt = Walkthrough(lab, "Quick start: two peers by hand",
                     namespaces=["alice", "bob"], interfaces=["wga", "wgb"],
                     links=["veth-a", "veth-b"])
    for block in wt.shell_blocks:
        wt.run(block).check()          # raises WalkthroughError with the output
    assert wt.leftovers() == []        # after the README's own clean-up block

The API:

``extract(markdown, heading)``
    every fenced block under the heading (up to the next heading of the same
    or a higher level), as ``Block``: its language, README line, the
    namespace of its ``# on NAME`` first line if any, and its text.
``Walkthrough(lab, heading, ...)``
    reads README.md and builds the substitution table.  ``shell_blocks`` are
    the sh/console blocks, ``blocks`` all of them (``text(block)`` gives an
    ini block, substituted, to write to a file); ``block(containing=...)``
    finds one.  ``run(block, timeout=...)`` runs a shell block to the end,
    ``start(block)`` in the background (killed by the lab), both returning
    a ``Run`` with the substituted script and its output.
``leftovers()``
    what the walkthrough's names still hold: namespaces, links, UAPI
    sockets, processes, files in its working directory.  Cleanup is
    guaranteed: the walkthrough registers its own with the lab, which kills
    every process left in its namespaces (``ip netns pids``) or carrying one
    of its unique names in its arguments, then deletes the namespaces.

The substitution table (the only change made to the README's text):

==================  ================================================
``namespaces``      each word becomes ``lab.name(word)``, a unique
                    namespace name; removed at cleanup with every
                    process inside
``interfaces``      each word becomes ``lab.wg_name()``: WireGuard
                    interface names must be unique per run because
                    ``/var/run/wireguard`` is shared by all namespaces
``links``           other link names (veths), made unique as namespaces
``hosts``           ``# on NAME`` -> an existing namespace (made by the
                    test, e.g. with natlab or proxylab); NAME is not
                    renamed in the text
``replace``         literal text -> text (addresses, paths), applied
                    first, longest first
==================  ================================================

Words are replaced where they stand alone (not inside a longer name made
of letters, digits, ``-`` and ``_``), so ``alice`` in ``alice.key`` is
renamed too; that is harmless.  A walkthrough's blocks run in one working
directory of its own under the lab's (``workdir``), so files the README
writes (keys, configs) stay there; every run's script and output are also
appended to ``<lab dir>/<id>.log``.  A console block runs the lines after its ``$ ``/``# `` prompts
(with their ``\\`` continuations); the other lines are expected output and
are not checked.  ``# on NAME`` (or ``# on the NAME``) as a block's first
line runs the block in the namespace mapped to NAME: ``hosts`` first, then
``namespaces``; ``# on the machine`` runs it outside any namespace.

A block for several hosts says ``# on alice and bob`` (or ``# on registry,
alice and bob``), and a note may follow a colon: ``# on alice:
/etc/wireguard/wg0.conf`` (a file's path, for an ini block), ``# on the
machine: what this does``.  ``Block.hosts`` and ``Block.note`` hold these;
``run(block, host=NAME)`` runs a block on one of its hosts.  ``Block.host``
is set only for the plain one-host form.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from wgpy.testing.lab import Lab

README = Path(__file__).resolve().parents[3] / "README.md"
SHELL_LANGS = ("sh", "console")

_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_FENCE = re.compile(r"^(```+|~~~+)\s*([\w+-]*)\s*$")
_ON = re.compile(r"^#\s*on\s+(?:the\s+)?([A-Za-z][\w-]*)\s*:?\s*$")
_ON_MANY = re.compile(
    r"^#\s*on\s+(?:the\s+)?(?P<hosts>[A-Za-z][\w-]*(?:\s*(?:,|\band\b)\s*[A-Za-z][\w-]*)*)"
    r"\s*(?::\s*(?P<note>.*?))?\s*$"
)
MACHINE = "machine"  # "# on the machine": no namespace
_PROMPT = re.compile(r"^[$#] ")


class WalkthroughError(AssertionError):
    """A block failed, timed out, or the README is not what the test expects."""


@dataclass(frozen=True)
class Block:
    heading: str
    lang: str  # "sh", "console", "ini", "" ...
    lineno: int  # README line of the opening fence (1-based)
    text: str  # the block as written
    host: str | None  # NAME from a first line "# on NAME"
    hosts: tuple[str, ...] = ()  # every NAME of "# on A, B and C[: note]"
    note: str = ""  # what follows the colon of that line

    def commands(self) -> str:
        """The shell script this block stands for (console prompts removed)."""
        if self.lang != "console":
            return self.text
        out: list[str] = []
        continued = False
        for line in self.text.splitlines():
            if continued:
                out.append(line)
            elif _PROMPT.match(line) and not _ON.match(line):
                out.append(line[2:])
            else:
                continue
            continued = line.rstrip().endswith("\\")
        return "\n".join(out) + "\n"


def extract(markdown: str, heading: str) -> list[Block]:
    """The fenced blocks under ``heading`` (its text without the ``#``s), in
    order, up to the next heading of the same or a higher level."""
    level: int | None = None  # the section's heading level, once found
    blocks: list[Block] = []
    fence: tuple[str, str, int, list[str]] | None = None  # marker, lang, line, body
    for i, line in enumerate(markdown.splitlines(), 1):
        if fence is not None:
            if line.strip() != fence[0]:
                fence[3].append(line)
                continue
            marker, lang, start, body = fence
            fence = None
            if level is not None:
                m = _ON.match(body[0].strip()) if body else None
                many = _ON_MANY.match(body[0].strip()) if body else None
                hosts = tuple(h for h in re.split(r"\s*(?:,|\band\b)\s*",
                                                  many.group("hosts")) if h) if many else ()
                blocks.append(Block(heading, lang, start, "\n".join(body) + "\n",
                                    m.group(1) if m else None, hosts,
                                    (many.group("note") or "") if many else ""))
            continue
        m = _FENCE.match(line)
        if m:
            fence = (m.group(1), m.group(2), i, [])
            continue
        h = _HEADING.match(line)
        if h is None:
            continue
        if level is not None and len(h.group(1)) <= level:
            break
        if level is None and h.group(2) == heading:
            level = len(h.group(1))
    if level is None:
        raise WalkthroughError(f"README.md has no heading {heading!r}")
    return blocks


@dataclass
class Run:
    block: Block
    namespace: str | None
    script: str  # after substitution
    returncode: int | None = None  # None: still running (start) or timed out
    stdout: str = ""
    stderr: str = ""
    seconds: float = 0.0
    timed_out: bool = False
    process: subprocess.Popen[bytes] | None = None

    def check(self) -> Run:
        """This run, if it succeeded (or, started in the background, still runs
        or exited 0); else a ``WalkthroughError`` with the script and output."""
        if self.process is not None:
            self.returncode = self.process.poll()
            failed = self.returncode not in (None, 0)
        else:
            failed = self.timed_out or self.returncode != 0
        if failed:
            what = "timed out" if self.timed_out else f"exited {self.returncode}"
            raise WalkthroughError(
                f"README.md:{self.block.lineno} ({self.block.heading}) {what}"
                f"{' in ' + self.namespace if self.namespace else ''}\n"
                f"--- script ---\n{self.script}--- stdout ---\n{self.stdout}"
                f"--- stderr ---\n{self.stderr}"
            )
        return self


@dataclass
class Walkthrough:
    lab: Lab
    heading: str
    namespaces: Iterable[str] = ()
    interfaces: Iterable[str] = ()
    links: Iterable[str] = ()
    hosts: Mapping[str, str] = field(default_factory=dict)
    replace: Mapping[str, str] = field(default_factory=dict)
    readme: Path = README
    env: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.blocks = extract(self.readme.read_text(), self.heading)
        self.shell_blocks = [b for b in self.blocks if b.lang in SHELL_LANGS]
        self.names: dict[str, str] = {}  # README word -> unique name
        self._namespaces: list[str] = []
        for word in self.namespaces:
            self.names[word] = self.lab.name(word)
            self._namespaces.append(self.names[word])
        for word in self.interfaces:
            self.names[word] = self.lab.wg_name()
        for word in self.links:
            self.names[word] = self.lab.name(word)
        self.id = self.lab.name("wt")
        self.workdir = self.lab.workdir / self.id
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.runs: list[Run] = []
        self.lab.cleanups.append(self.cleanup)
        self._words = (
            re.compile(
                r"(?<![\w-])(" + "|".join(
                    re.escape(w) for w in sorted(self.names, key=len, reverse=True)
                ) + r")(?![\w-])"
            )
            if self.names else None
        )

    # -- the substitution -------------------------------------------------
    def substitute(self, text: str) -> str:
        for old in sorted(self.replace, key=len, reverse=True):
            text = text.replace(old, self.replace[old])
        if self._words is not None:
            text = self._words.sub(lambda m: self.names[m.group(1)], text)
        return text

    def text(self, block: Block) -> str:
        """A block's text after substitution (e.g. an ini file to write)."""
        return self.substitute(block.text)

    def namespace_for(self, block: Block, host: str | None = None) -> str | None:
        """The namespace of ``host`` (one of the block's hosts), else of the block's."""
        if host is not None and host not in block.hosts:
            raise WalkthroughError(f"README.md:{block.lineno}: the block is not for {host!r}")
        name = host if host is not None else block.host
        if name is None or name == MACHINE:
            return None
        if name in self.hosts:
            return self.hosts[name]
        if name in self.names and self.names[name] in self._namespaces:
            return self.names[name]
        raise WalkthroughError(
            f"README.md:{block.lineno}: '# on {name}' names no host the test mapped"
        )

    def block(self, containing: str) -> Block:
        """The one block whose text contains ``containing``."""
        found = [b for b in self.blocks if containing in b.text]
        if len(found) != 1:
            raise WalkthroughError(
                f"{len(found)} blocks under {self.heading!r} contain {containing!r}"
            )
        return found[0]

    # -- running ----------------------------------------------------------
    def _argv(self, block: Block, host: str | None) -> tuple[list[str], str | None, str]:
        if block.lang not in SHELL_LANGS:
            raise WalkthroughError(f"README.md:{block.lineno}: a {block.lang!r} block is no script")
        ns = self.namespace_for(block, host)
        script = self.substitute(block.commands())
        argv = ["bash", "-e", "-c", script]
        if ns is not None:
            argv = ["ip", "netns", "exec", ns, *argv]
        return argv, ns, script

    def run(self, block: Block, timeout: float = 60, host: str | None = None) -> Run:
        """Run a shell block to its end with ``bash -e``; bounded by ``timeout``.
        ``host``: which of the block's hosts, for a block with several."""
        argv, ns, script = self._argv(block, host)
        r = Run(block, ns, script)
        start = time.monotonic()
        p = subprocess.Popen(
            argv, cwd=self.workdir, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env={**os.environ, **self.env}, start_new_session=True,
        )
        try:
            out, err = p.communicate(timeout=timeout)
            r.returncode = p.returncode
        except subprocess.TimeoutExpired:
            _kill_group(p.pid)
            out, err = p.communicate()
            r.timed_out = True
        r.stdout, r.stderr = out.decode(errors="replace"), err.decode(errors="replace")
        r.seconds = time.monotonic() - start
        self.runs.append(r)
        self._log(r)
        return r

    def start(self, block: Block, host: str | None = None) -> Run:
        """Start a shell block in the background (a daemon the README runs in
        the foreground, or a block that leaves one running with ``&``); the
        lab kills it.  Its output goes to a log file in the lab's directory,
        named in ``Run.stdout``."""
        argv, ns, script = self._argv(block, host)
        log = f"{self.id}-{block.lineno}{'-' + host if host else ''}.log"
        p = self.lab.popen(None, argv, env=dict(self.env), log=log)
        r = Run(block, ns, script, stdout=str(self.lab.workdir / log), process=p)
        self.runs.append(r)
        return r

    def _log(self, r: Run) -> None:
        with open(self.lab.workdir / f"{self.id}.log", "a") as f:
            f.write(
                f"=== README.md:{r.block.lineno} ns={r.namespace} rc={r.returncode} "
                f"{r.seconds:.2f}s\n{r.script}--- stdout\n{r.stdout}--- stderr\n{r.stderr}\n"
            )

    # -- what is left, and cleanup ----------------------------------------
    def _tokens(self) -> set[str]:
        return set(self.names.values())

    def _processes(self) -> list[int]:
        """Processes carrying one of our unique names in their arguments."""
        tokens = self._tokens()
        me = os.getpid()
        pids = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) == me:
                continue
            try:
                args = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            words = {a.decode(errors="replace") for a in args}
            if words & tokens:
                pids.append(int(entry))
        return pids

    def leftovers(self) -> list[str]:
        """What the walkthrough's names still hold; empty after a clean-up."""
        left: list[str] = []
        existing = _netns_list()
        left += [f"namespace {ns}" for ns in self._namespaces if ns in existing]
        for word in [*self.interfaces, *self.links]:
            name = self.names[word]
            if subprocess.run(["ip", "link", "show", name], capture_output=True).returncode == 0:
                left.append(f"link {name}")
        for word in self.interfaces:
            sock = Path("/var/run/wireguard") / f"{self.names[word]}.sock"
            if sock.exists():
                left.append(f"socket {sock}")
        left += [f"process {pid}" for pid in self._processes()]
        left += [f"file {p}" for p in sorted(self.workdir.iterdir())]
        return left

    def wait_clean(self, timeout: float = 10) -> list[str]:
        """``leftovers()`` once it is empty, or at ``timeout`` (daemons take a
        moment to exit after their interface is deleted)."""
        deadline = time.monotonic() + timeout
        while True:
            left = self.leftovers()
            if not left or time.monotonic() >= deadline:
                return left
            time.sleep(0.1)

    def cleanup(self) -> None:
        """Kill what the walkthrough started and delete its namespaces."""
        pids = set(self._processes())
        existing = _netns_list()
        for ns in self._namespaces:
            if ns in existing:
                p = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True)
                pids |= {int(x) for x in p.stdout.split() if x.isdigit()}
        _kill_all(pids)
        for ns in self._namespaces:
            if ns in existing:
                subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        for word in self.links:
            subprocess.run(["ip", "link", "del", self.names[word]], capture_output=True)


def _netns_list() -> set[str]:
    p = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
    return {line.split()[0] for line in p.stdout.splitlines() if line.strip()}


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _kill_all(pids: set[int], grace: float = 5) -> None:
    """SIGTERM, then SIGKILL what is still there after ``grace`` seconds."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace
        while pids and time.monotonic() < deadline:
            pids = {p for p in pids if Path(f"/proc/{p}").exists() and not _zombie(p)}
            time.sleep(0.05)
        if not pids:
            return


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z")
    except (OSError, IndexError):
        return False
