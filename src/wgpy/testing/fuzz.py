"""The long fuzzing run: ``python3 -m wgpy.testing.fuzz --inputs 1000000``.

Runs every target of ``wgpy.testing.fuzztargets.TARGETS`` (or ``--targets a,b``) for its share
of ``--inputs`` (split evenly), with atheris (coverage-guided libFuzzer, one
child process per target, wgpy instrumented) when it is installed, else with
a built-in mutation engine (bit flips, byte edits, truncation, splicing of
the seed inputs; deterministic from ``--seed``).  Every input that raises is
saved under ``--regressions DIR/<target>/`` (default
``tests/fuzz/regressions``, from the repository's root: the smoke test
replays them all) and the run exits 1.  Prints one summary line per target
and a total.

    python3 -m wgpy.testing.fuzz --inputs 1000000
    python3 -m wgpy.testing.fuzz --inputs 20000 --engine mutate --targets device
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

REGRESSIONS = Path("tests/fuzz/regressions")


def save_regression(regressions: Path, target: str, data: bytes) -> Path:
    d = regressions / target
    d.mkdir(parents=True, exist_ok=True)
    path = d / hashlib.sha1(data).hexdigest()[:16]
    path.write_bytes(data)
    return path


def mutate(r: random.Random, pool: list[bytes], max_len: int = 4096) -> bytes:
    s = bytearray(r.choice(pool))
    for _ in range(r.randint(1, 6)):
        op = r.randrange(8)
        if op == 0 and s:
            s[r.randrange(len(s))] ^= 1 << r.randrange(8)
        elif op == 1 and s:
            s[r.randrange(len(s))] = r.choice((0, 1, 0x7F, 0x80, 0xFF, r.randrange(256)))
        elif op == 2:
            pos = r.randrange(len(s) + 1)
            s[pos:pos] = bytes(r.randrange(256) for _ in range(r.randint(1, 8)))
        elif op == 3 and s:
            pos = r.randrange(len(s))
            del s[pos:pos + r.randint(1, 8)]
        elif op == 4:
            s = s[:r.randrange(len(s) + 1)]
        elif op == 5:
            other = r.choice(pool)
            cut = r.randrange(len(other) + 1)
            s = s[:r.randrange(len(s) + 1)] + bytearray(other[cut:])
        elif op == 6 and s:  # an interesting text token, for the text parsers
            tok = r.choice(_BYTE_TOKENS)
            pos = r.randrange(len(s) + 1)
            s[pos:pos] = tok
        elif op == 7 and len(s) > 1:  # duplicate a slice (line repetition)
            a = r.randrange(len(s))
            b = min(len(s), a + r.randint(1, 64))
            pos = r.randrange(len(s) + 1)
            s[pos:pos] = s[a:b]
    return bytes(s[:max_len])


def run_mutate(target: str, inputs: int, seed: int, regressions: Path) -> dict[str, Any]:
    from wgpy.testing import fuzztargets as targets

    fn = targets.TARGETS[target]
    pool = list(targets.seeds(target))
    r = random.Random(f"{seed}:{target}")
    crashes: list[str] = []
    t0 = time.monotonic()
    for data in pool:
        fn(data)
    for i in range(inputs):
        data = mutate(r, pool)
        try:
            fn(data)
        except Exception:  # noqa: BLE001 - any exception is a finding
            path = save_regression(regressions, target, data)
            crashes.append(f"{path.name}: {traceback.format_exc(limit=3).splitlines()[-1]}")
            if len(crashes) >= 20:
                break
        else:
            if i % 64 == 0 and len(pool) < 512:
                pool.append(data)  # keep some survivors: deeper mutations
    return {"target": target, "engine": "mutate", "inputs": i + 1 if inputs else 0,
            "seconds": round(time.monotonic() - t0, 1), "crashes": crashes}


# Words of the text formats, for libFuzzer's -dict and the built-in engine.
TOKENS = [
    "private_key=", "listen_port=", "fwmark=", "replace_peers=true", "public_key=",
    "remove=true", "update_only=true", "preshared_key=", "endpoint=",
    "persistent_keepalive_interval=", "replace_allowed_ips=true", "allowed_ip=",
    "protocol_version=1", "errno=", "get=1", "set=1", "[Interface]", "[Peer]", "[Proxy]",
    "[Rule]", "PrivateKey", "ListenPort", "FwMark", "PublicKey", "PresharedKey",
    "AllowedIPs", "Endpoint", "PersistentKeepalive", "Address", "MTU", "DNS", "Table",
    "SaveConfig", "PostUp", "Prefix", "Origin", "Ports", "Protocol", "Map", "->",
    "ProxyProtocol", "a" * 64, "0" * 64, "/32", "/128", "[fd00::1]:", "%eth0", "0x",
    "\u00b2", "\u0661", "65536", "4294967296", "18446744073709551616",
]


_BYTE_TOKENS = [t.encode() for t in TOKENS] + [
    b"=", b"\n", b"#", b"[", b"]", b":", b"/", b",", b"%", b"\x00", b"-1", b" ", b"\t"]


def _dict_file(path: Path) -> Path:
    def esc(t: str) -> str:
        return "".join(c if 32 <= ord(c) < 127 and c not in '"\\' else
                       "".join(f"\\x{b:02x}" for b in c.encode()) for c in t)
    path.write_text("".join(f'"{esc(t)}"\n' for t in TOKENS))
    return path


def run_atheris(target: str, inputs: int, seed: int, regressions: Path) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "corpus"
        corpus.mkdir()
        artifacts = Path(tmp) / "artifacts"
        artifacts.mkdir()
        words = _dict_file(Path(tmp) / "words.dict")
        t0 = time.monotonic()
        p = subprocess.run(
            [sys.executable, "-m", "wgpy.testing.fuzz", "--child", target, str(regressions), "--",
             f"-runs={inputs}", f"-seed={seed}", "-timeout=20", "-rss_limit_mb=3072",
             "-max_len=4096", "-print_final_stats=1", f"-artifact_prefix={artifacts}/",
             f"-dict={words}", str(corpus)],
            capture_output=True, text=True, timeout=3600,
        )
        crashes = []
        for f in sorted(artifacts.iterdir()):
            if f.suffix == ".why":
                continue
            why_file = f.with_name(f.name + ".why")
            why = why_file.read_text() if why_file.exists() else f.name.split("-")[0]
            path = save_regression(regressions, target, f.read_bytes())
            crashes.append(f"{path.name}: {why}")
        runs = 0
        for line in p.stderr.splitlines():
            if line.startswith("stat::number_of_executed_units:"):
                runs = int(line.split(":")[-1])
        if p.returncode != 0 and not crashes:
            crashes.append(f"exit {p.returncode}: {p.stderr[-2000:]}")
        return {"target": target, "engine": "atheris", "inputs": runs,
                "seconds": round(time.monotonic() - t0, 1), "crashes": crashes}


def child(target: str, regressions: Path, args: list[str]) -> None:
    import atheris

    with atheris.instrument_imports(include=["wgpy", "dns"]):
        from wgpy.testing import fuzztargets as targets
    target_fn = targets.TARGETS[target]
    artifacts = Path(next(a for a in args if a.startswith("-artifact_prefix="))
                     .split("=", 1)[1])
    seen: set[str] = set()

    def fn(data: bytes) -> None:
        # Record the first failing input per distinct failure (type and place)
        # and go on: libFuzzer would stop at the first.
        try:
            target_fn(data)
        except Exception as e:  # noqa: BLE001 - any exception is a finding
            tb = traceback.extract_tb(e.__traceback__)[-1]
            sig = f"{type(e).__name__}@{tb.filename}:{tb.lineno}"
            if sig not in seen and len(seen) < 20:
                seen.add(sig)
                name = "crash-" + hashlib.sha1(data).hexdigest()
                (artifacts / name).write_bytes(data)
                (artifacts / (name + ".why")).write_text(f"{type(e).__name__}: {e}"[:300])

    corpus = Path(args[-1])
    for i, s in enumerate(targets.seeds(target)):
        (corpus / f"seed{i}").write_bytes(s)
    saved = regressions / target
    for f in sorted(saved.glob("*")) if saved.is_dir() else []:
        (corpus / f"reg-{f.name}").write_bytes(f.read_bytes())
    atheris.Setup([sys.argv[0], *args], fn)
    atheris.Fuzz()


def have_atheris() -> bool:
    try:
        import atheris  # noqa: F401
    except ImportError:
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        child(argv[1], Path(argv[2]), argv[4:])
        return 0
    from wgpy.testing.fuzztargets import TARGETS

    p = argparse.ArgumentParser(prog="python3 -m wgpy.testing.fuzz")
    p.add_argument("--inputs", type=int, default=1_000_000, help="total, split over targets")
    p.add_argument("--targets", default=",".join(TARGETS))
    p.add_argument("--engine", choices=("auto", "atheris", "mutate"), default="auto")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json", metavar="FILE", help="also write the summary as JSON")
    p.add_argument("--regressions", metavar="DIR", type=Path, default=REGRESSIONS,
                   help=f"where failing inputs are saved and replayed from (default {REGRESSIONS})")
    a = p.parse_args(argv)
    names = [t for t in a.targets.split(",") if t]
    unknown = [t for t in names if t not in TARGETS]
    if unknown:
        p.error(f"unknown targets: {unknown}; known: {list(TARGETS)}")
    engine = a.engine
    if engine == "auto":
        engine = "atheris" if have_atheris() else "mutate"
    share = max(1, a.inputs // len(names))
    results = []
    for t in names:
        run = run_atheris if engine == "atheris" else run_mutate
        res = run(t, share, a.seed, a.regressions)
        results.append(res)
        print(f"{t:14} {res['engine']:8} {res['inputs']:>9} inputs {res['seconds']:>7}s "
              f"crashes: {res['crashes']}",
              flush=True)
    total = sum(int(r["inputs"]) for r in results)
    crashes = sum(len(r["crashes"]) for r in results)
    print(f"total: {total} inputs, {crashes} crashes", flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps({"total": total, "crashes": crashes,
                                            "targets": results}, indent=1))
    return 1 if crashes else 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
