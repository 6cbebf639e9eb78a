"""A real handshake flood against wgpyd, with a legitimate wireguard-go peer.

Topology (all namespaces made here; addresses 10.80-81/16, fd00:80-82::):

    attacker 10.80.0.2 ─── 10.80.0.1 responder (wgpyd) 10.81.0.1 ─── 10.81.0.2 legit (wireguard-go)
    (10.88.0.0/16 routed locally:       10.99.0.1 in the tunnel         10.99.0.2
     spoofed sources get their replies)

The attacker sends thousands of valid-mac1 initiations per second from 4094
spoofed addresses and 32 ports, plus a few cookie-holding sources (IPv4 and
IPv6, two of them in one /64) that send valid-mac2 initiations at 200/s each.
wgpyd's counters come from its SIGUSR1 stats line; packet counts also from
iptables.  Figures go to the test log and to ``$WGPY_FIGURES`` (JSON) if set.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import time
from pathlib import Path

import pytest

from wgpy.testing.lab import Lab, require
from wgpy.testing.nodes import WgNode, connect, start

pytestmark = pytest.mark.netns

HERE = Path(__file__).parent
FLOOD_RATE = 4000
FLOOD_SECONDS = 10.0
HOLDER_START = 1.0
HOLDERS = ["10.88.200.1", "10.88.200.2", "fd00:80::a1", "fd00:80::a2", "fd00:82::a1"]
HOLDER_KEYS = 4  # rate-limit keys: two /32s, fd00:80::/64 (shared by two), fd00:82::/64
RATELIMIT_BURST, RATELIMIT_PPS = 5, 20
UNDER_LOAD_THRESHOLD = 128


def stats(lab: Lab, node: WgNode, pid: int) -> dict[str, int]:
    """Ask wgpyd for its counters (SIGUSR1) and parse the line it logs."""
    n = lab.log(node.log).count(" stats ")
    os.kill(pid, signal.SIGUSR1)
    lab.wait_for("stats line", lambda: lab.log(node.log).count(" stats ") > n, timeout=10)
    line = [x for x in lab.log(node.log).splitlines() if " stats " in x][-1]
    return {k: int(v) for k, v in re.findall(r"([\w.]+)=(\d+)", line)}


def dh_ops(s: dict[str, int]) -> int:
    reasons = ("HANDSHAKE_DECRYPT", "UNKNOWN_PEER", "REPLAYED_TIMESTAMP", "INITIATION_FLOOD",
               "UNEXPECTED_RESPONSE")
    accepted = s.get("initiations_received", 0) + s.get("responses_received", 0)
    return accepted + sum(s.get(f"drop.{r}", 0) for r in reasons)


def handshake_msgs(s: dict[str, int]) -> int:
    return dh_ops(s) + s.get("drop.BAD_MAC2", 0) + s.get("drop.RATE_LIMITED", 0)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def ipt_packets(lab: Lab, ns: str, chain: str, comment: str) -> int:
    out = lab.run(ns, f"iptables -nvxL {chain}").stdout
    for line in out.splitlines():
        if comment in line:
            return int(line.split()[0])
    raise AssertionError(f"no rule {comment} in {out}")


def udp_rcvbuf_errors(lab: Lab, ns: str) -> int:
    snmp = lab.run(ns, "cat /proc/net/snmp").stdout.splitlines()
    udp = [x.split() for x in snmp if x.startswith("Udp:")]
    return int(udp[1][udp[0].index("RcvbufErrors")])


def test_handshake_flood(lab: Lab) -> None:
    require("wg", "wireguard-go", "iptables", "ping")
    atk, resp, legit = lab.netns("atk"), lab.netns("resp"), lab.netns("legit")
    lab.veth(atk, resp, "eth0", "eth0")
    lab.veth(resp, legit, "eth1", "eth0")
    lab.run(atk, "ip addr add 10.80.0.2/24 dev eth0; ip addr add fd00:80::2/64 dev eth0 nodad;"
                 "ip addr add fd00:80::a1/64 dev eth0 nodad; ip addr add fd00:80::a2/64 dev eth0"
                 " nodad; ip addr add fd00:82::a1/64 dev eth0 nodad;"
                 "ip route add local 10.88.0.0/16 dev lo")
    lab.run(resp, "ip addr add 10.80.0.1/24 dev eth0; ip addr add fd00:80::1/64 dev eth0 nodad;"
                  "ip addr add 10.81.0.1/24 dev eth1;"
                  "ip route add 10.88.0.0/16 via 10.80.0.2;"
                  "ip -6 route add fd00:82::/64 via fd00:80::2")
    lab.run(legit, "ip addr add 10.81.0.2/24 dev eth0")
    # Count on the responder's side of the wire.
    lab.run(resp, "iptables -A INPUT -i eth0 -p udp --dport 51820 -m comment --comment flood_in;"
                  "iptables -A OUTPUT -o eth0 -p udp --sport 51820 -m length --length 92 "
                  "-m comment --comment cookie_out")

    # LOG_LEVEL=verbose logs every dropped packet: WGPY_FLOOD_LOG_LEVEL=verbose measures that.
    level = os.environ.get("WGPY_FLOOD_LOG_LEVEL", "error")
    r = start(lab, resp, "wgpyd", "10.99.0.1/24", extra_env={"LOG_LEVEL": level})
    pid = lab.procs[-1].pid
    assert "wgpyd" in Path(f"/proc/{pid}/cmdline").read_text(errors="replace")
    g = start(lab, legit, "wireguard-go", "10.99.0.2/24")
    connect(r, g, "10.99.0.1/32", "10.99.0.2/32", "10.81.0.1:51820", None)
    pub_hex = lab.run(None, f"echo {r.public} | base64 -d | xxd -p -c 64").stdout.strip()

    s0 = stats(lab, r, pid)
    assert s0["under_load"] == 0
    rcvbuf0 = udp_rcvbuf_errors(lab, resp)
    cpu0, t0 = cpu_seconds(pid), time.monotonic()
    flood = lab.popen(atk, [sys.executable, "-m", "wgpy.testing.flood",
                            "--target", "10.80.0.1:51820", "--target6", "[fd00:80::1]:51820",
                            "--pub", pub_hex, "--rate", str(FLOOD_RATE),
                            "--duration", str(FLOOD_SECONDS), "--spoof", "10.88.0.0/20",
                            "--holder-start", str(HOLDER_START),
                            *[x for h in HOLDERS for x in ("--holder", h)]],
                      log="flood.json")
    time.sleep(1.5)
    # The legitimate peer starts talking during the flood.
    ping_t0 = time.time()
    lab.popen(legit, "ping -D -i 0.2 -c 60 -W 1 10.99.0.1", log="legit-ping.log")
    try:
        lab.wait_for("legitimate handshake during the flood",
                     lambda: "bytes from" in lab.log("legit-ping.log"), timeout=15, step=0.1)
    except Exception:
        print("legit log:", g.logtext()[-3000:], "\nping:", lab.log("legit-ping.log"),
              "\nresponder:", stats(lab, r, pid))
        raise
    first = re.search(r"\[(\d+\.\d+)\] \d+ bytes from", lab.log("legit-ping.log"))
    assert first is not None
    legit_handshake = float(first.group(1)) - ping_t0
    # Still flooding: the device must be under load, and the legit peer's pings flow.
    remaining = FLOOD_SECONDS - (time.monotonic() - t0) - 0.5
    assert remaining > 0.5, "the flood ended before the legitimate peer was checked"
    time.sleep(min(1.0, remaining - 0.3))
    s1 = stats(lab, r, pid)
    cpu1, t1 = cpu_seconds(pid), time.monotonic()
    assert s1["under_load"] == 1, s1
    during = lab.log("legit-ping.log").count("bytes from")
    assert during >= 3
    flood.wait(timeout=FLOOD_SECONDS + 20)
    result = json.loads(lab.log("flood.json").strip().splitlines()[-1])
    time.sleep(1.6)  # UNDER_LOAD_AFTER_TIME (1 s) has passed since the last flood packet
    s2 = stats(lab, r, pid)
    assert s2["under_load"] == 0, s2
    rcvbuf_errors = udp_rcvbuf_errors(lab, resp) - rcvbuf0

    # After the flood a junk initiation gets no cookie reply: it is processed (one DH)
    # and dropped silently.
    probe = lab.run(atk, [sys.executable, "-m", "wgpy.testing.flood", "--target",
                          "10.80.0.1:51820", "--pub", pub_hex, "--rate", "20",
                          "--duration", "1.5", "--spoof", "10.88.16.0/30",
                          "--holder-start", "0", "--holder", "10.88.200.9"], timeout=30)
    probe_result = json.loads(probe.stdout.strip().splitlines()[-1])
    assert probe_result["holders"][0]["replies"] == 0, probe_result
    s3 = stats(lab, r, pid)
    assert s3["under_load"] == 0 and dh_ops(s3) > dh_ops(s2)

    # Accounting over the whole flood (s0 -> s2).
    msgs = handshake_msgs(s2) - handshake_msgs(s0)
    cookies = s2["cookie_replies_sent"] - s0["cookie_replies_sent"]
    dh = dh_ops(s2) - dh_ops(s0)
    limited = s2.get("drop.RATE_LIMITED", 0) - s0.get("drop.RATE_LIMITED", 0)
    holder_seconds = FLOOD_SECONDS - HOLDER_START
    dh_bound = (2 * UNDER_LOAD_THRESHOLD + 10
                + HOLDER_KEYS * (RATELIMIT_BURST + RATELIMIT_PPS * holder_seconds))
    holders_sent = sum(h["sent"] for h in result["holders"])
    figures = {
        "flood_sent": result["sent"], "flood_sent_per_s": round(result["rate"]),
        "flood_seconds": round(result["elapsed"], 2),
        "arrived_at_responder": ipt_packets(lab, resp, "INPUT", "flood_in"),
        "handshake_msgs_processed": msgs,
        "processed_per_s": round(msgs / result["elapsed"]),
        "socket_drops_rcvbuf": rcvbuf_errors,
        "cookie_replies": cookies, "cookie_replies_per_s": round(cookies / result["elapsed"]),
        "cookie_replies_on_wire": ipt_packets(lab, resp, "OUTPUT", "cookie_out"),
        "dh_ops": dh, "dh_ops_per_s": round(dh / result["elapsed"], 1), "dh_bound": dh_bound,
        "rate_limited": limited, "holders_sent": holders_sent,
        "holders_with_cookie": sum(h["cookie"] for h in result["holders"]),
        "legit_handshake_s": round(legit_handshake, 2),
        "legit_pings_answered_during_flood": during,
        "log_level": level, "log_bytes": len(r.logtext()),
        "cpu_core_fraction": round((cpu1 - cpu0) / (t1 - t0), 2),
        "cpu_us_per_msg": round(1e6 * (cpu1 - cpu0) / max(1, handshake_msgs(s1)
                                                             - handshake_msgs(s0)), 1),
    }
    print("FLOOD FIGURES", json.dumps(figures))
    if os.environ.get("WGPY_FIGURES"):
        Path(os.environ["WGPY_FIGURES"]).write_text(json.dumps(figures, indent=1))
    assert result["sent"] >= FLOOD_RATE * FLOOD_SECONDS * 0.5, result
    assert msgs >= 1000, figures
    # Under load almost every message was answered with a cookie, not a DH.
    assert cookies >= 0.8 * (msgs - holders_sent), figures
    assert dh <= dh_bound, figures
    # Cookie holders met the per-source rate limiter.
    assert figures["holders_with_cookie"] == len(HOLDERS), result
    assert limited > 0, figures
    # The legitimate peer got through: a cookie round trip, then REKEY_TIMEOUT (5 s).
    assert legit_handshake < 9, figures
    assert "Traceback" not in r.logtext()
    assert Path(f"/proc/{pid}").exists(), "wgpyd died during the flood"
