"""Protocol constants, named as in the WireGuard whitepaper (section 6.1)."""

from __future__ import annotations

from typing import Final

CONSTRUCTION: Final = b"Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s"
IDENTIFIER: Final = b"WireGuard v1 zx2c4 Jason@zx2c4.com"
LABEL_MAC1: Final = b"mac1----"
LABEL_COOKIE: Final = b"cookie--"

REKEY_AFTER_MESSAGES: Final = 1 << 60
REJECT_AFTER_MESSAGES: Final = (1 << 64) - (1 << 13) - 1
REKEY_AFTER_TIME: Final = 120.0
REJECT_AFTER_TIME: Final = 180.0
REKEY_ATTEMPT_TIME: Final = 90.0
REKEY_TIMEOUT: Final = 5.0
REKEY_TIMEOUT_JITTER_MAX: Final = 1.0 / 3.0
KEEPALIVE_TIMEOUT: Final = 10.0
COOKIE_REFRESH_TIME: Final = 120.0
# Retries of one initiation before giving up: REKEY_ATTEMPT_TIME / REKEY_TIMEOUT.
MAX_TIMER_HANDSHAKES: Final = int(REKEY_ATTEMPT_TIME / REKEY_TIMEOUT)

# A peer may not make us do a responder's DH more often than this.
HANDSHAKE_INITIATION_RATE: Final = 0.020
# Under load, per-source handshake budget (Linux and wireguard-go).
RATELIMIT_PACKETS_PER_SECOND: Final = 20
RATELIMIT_BURST: Final = 5
RATELIMIT_TABLE_MAX: Final = 8192
# How long the "under load" state outlives the load that caused it.
UNDER_LOAD_AFTER_TIME: Final = 1.0
# Handshake messages per second that put the device under load.  wireguard-go
# uses an eighth of its 1024-slot handshake queue; a rate suits a sans-IO core.
UNDER_LOAD_THRESHOLD: Final = 128

# ICMP destination unreachable answers, per second and in a burst: the
# kernel's defaults for the ICMP errors a host sends (icmp_msgs_per_sec,
# icmp_msgs_burst).
ICMP_ERROR_RATE: Final = 1000.0
ICMP_ERROR_BURST: Final = 50

# Packets queued per peer while its handshake runs (wireguard-go: 128).
MAX_STAGED_PACKETS: Final = 128
# Session index table: a bound on concurrent handshakes and keypairs.
MAX_PEERS: Final = 1 << 16

KEY_LEN: Final = 32
# An all-zero key means "none": no private key, no preshared key.
ZERO_KEY: Final = bytes(KEY_LEN)
TAG_LEN: Final = 16
TIMESTAMP_LEN: Final = 12
DEFAULT_MTU: Final = 1420
PADDING_MULTIPLE: Final = 16
