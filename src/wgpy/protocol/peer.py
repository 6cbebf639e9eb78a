"""One WireGuard peer: its keys, sessions, timers and the send path.

Theory of operation (outbound, as wireguard-go's send.go): packets for the
peer are encrypted at once with the current keypair when one is usable
(``fastpath.send_batch``); otherwise they are staged (a bounded queue,
oldest dropped first) and a handshake is started.  When a session appears (response consumed, or the
responder's keypair confirmed) the staged packets go out.  The timer hooks
of ``timers.PeerTimers`` are called at the same points as in timers.c.
Every method appends the actions it produces to ``out``.
"""

from __future__ import annotations

import base64
from collections import deque
from typing import TYPE_CHECKING

from wgpy.protocol import messages, noise
from wgpy.protocol.constants import (
    KEEPALIVE_TIMEOUT,
    MAX_STAGED_PACKETS,
    MAX_TIMER_HANDSHAKES,
    PADDING_MULTIPLE,
    REJECT_AFTER_MESSAGES,
    REJECT_AFTER_TIME,
    REKEY_AFTER_MESSAGES,
    REKEY_AFTER_TIME,
    REKEY_TIMEOUT,
)
from wgpy.protocol.cookie import CookieGenerator
from wgpy.protocol.crypto import nonce
from wgpy.protocol.errors import DropReason
from wgpy.protocol.events import Action, Endpoint, LogEvent, SendDatagram
from wgpy.protocol.keypair import Keypair, Keypairs
from wgpy.protocol.timers import PeerTimers, TimerKind

if TYPE_CHECKING:
    from wgpy.protocol.device import Device

_ZERO_PAD = bytes(PADDING_MULTIPLE)


def short_name(public_key: bytes) -> str:
    """The peer's name in log lines, as wireguard-go prints it."""
    b = base64.b64encode(public_key).decode()
    return f"peer({b[:4]}…{b[39:43]})"


class Peer:
    def __init__(self, device: Device, public_key: bytes) -> None:
        self.device = device
        self.public_key = public_key
        self.name = short_name(public_key)
        self.handshake = noise.Handshake(public_key)
        self.handshake.precompute(device.identity)
        self.cookies = CookieGenerator(public_key)
        self.keypairs = Keypairs()
        self.timers = PeerTimers(self.schedule, device.jitter)
        self.endpoint: Endpoint | None = None
        self.staged: deque[bytes] = deque()
        self.tx_bytes = 0
        self.rx_bytes = 0
        self.last_handshake_wall: float | None = None
        self.last_sent_handshake = float("-inf")
        self.scheduled = float("inf")
        self.removed = False

    def __repr__(self) -> str:
        return self.name

    def schedule(self, when: float) -> None:
        """Make sure the device ticks this peer at ``when`` (timers call it)."""
        if when < self.scheduled:
            self.scheduled = when
            self.device.schedule(when, self)

    def _log(self, out: list[Action], message: str) -> None:
        if self.device.verbose:
            out.append(LogEvent(f"{self.name} - {message}"))

    # -- configuration ---------------------------------------------------
    @property
    def preshared_key(self) -> bytes:
        return self.handshake.preshared_key

    @preshared_key.setter
    def preshared_key(self, key: bytes) -> None:
        self.handshake.preshared_key = key

    @property
    def persistent_keepalive_interval(self) -> int:
        return self.timers.persistent_keepalive_interval

    def set_persistent_keepalive(
        self, interval: int, now: float, wall: float, out: list[Action]
    ) -> None:
        """Set the interval; turning it on sends a keepalive at once (as wireguard-go)."""
        old = self.timers.persistent_keepalive_interval
        self.timers.persistent_keepalive_interval = interval
        if interval == 0:
            self.timers.stop(TimerKind.PERSISTENT_KEEPALIVE)
        elif old == 0:
            self.send_keepalive(now, wall, out)

    # -- send path ---------------------------------------------------------
    @staticmethod
    def _usable(kp: Keypair, now: float) -> bool:
        return kp.send_counter < REJECT_AFTER_MESSAGES and now - kp.created < REJECT_AFTER_TIME

    def _encrypt(self, kp: Keypair, packet: bytes) -> bytes:
        counter = kp.send_counter
        kp.send_counter = counter + 1
        size = len(packet)
        pad = messages.padded_length(size, self.device.mtu) - size
        if pad:
            packet = packet + _ZERO_PAD[:pad] if pad <= PADDING_MULTIPLE else packet + bytes(pad)
        header = messages.TransportHeader.pack(kp.remote_index, counter)
        return header + kp.send.encrypt(nonce(counter), packet, None)

    def stage(self, packet: bytes) -> None:
        """Queue an inner packet until a session can carry it (oldest dropped first)."""
        if len(self.staged) >= MAX_STAGED_PACKETS:
            self.staged.popleft()
            self.device.stats.drop(DropReason.QUEUE_FULL)
        self.staged.append(packet)

    def send_keepalive(self, now: float, wall: float, out: list[Action]) -> None:
        """Send staged packets, or an empty keepalive when nothing is staged."""
        if not self.staged:
            self.staged.append(b"")
        self.send_staged(now, wall, out)

    def send_staged(self, now: float, wall: float, out: list[Action]) -> None:
        """Encrypt and send the queue on the current session, or start a handshake."""
        if not self.staged:
            return
        kp = self.keypairs.current
        if kp is None or not self._usable(kp, now):
            self.initiate(now, wall, out, retry=False)
            return
        if self.endpoint is None:
            return
        sent_data = False
        while self.staged:
            if kp.send_counter >= REJECT_AFTER_MESSAGES:
                # Exhausted mid-flush (kernel send.c out_invalid): the rest
                # wait for the session the handshake below brings.
                self.initiate(now, wall, out, retry=False)
                break
            packet = self.staged.popleft()
            data = self._encrypt(kp, packet)
            out.append(SendDatagram(self.endpoint, data))
            self.tx_bytes += len(data)
            if packet:
                sent_data = True
            else:
                self._log(out, "Sending keepalive packet")
        self.timers.on_any_authenticated_packet_traversal(now)
        self.timers.on_any_authenticated_packet_sent(now)
        if sent_data:
            self.timers.on_data_sent(now)
        self.keep_key_fresh_sending(kp, now, wall, out)

    def keep_key_fresh_sending(
        self, kp: Keypair, now: float, wall: float, out: list[Action]
    ) -> None:
        """Call after sending on ``kp``: start a rekey when it is old or worn."""
        if kp.send_counter > REKEY_AFTER_MESSAGES or (
            kp.is_initiator and now - kp.created > REKEY_AFTER_TIME
        ):
            self.initiate(now, wall, out, retry=False)

    def keep_key_fresh_receiving(self, now: float, wall: float, out: list[Action]) -> None:
        """Call after receiving: an initiator whose session nears its end rekeys once."""
        if self.timers.sent_last_minute_handshake:
            return
        kp = self.keypairs.current
        if (
            kp is not None
            and kp.is_initiator
            and now - kp.created > REJECT_AFTER_TIME - KEEPALIVE_TIMEOUT - REKEY_TIMEOUT
        ):
            self.timers.sent_last_minute_handshake = True
            self.initiate(now, wall, out, retry=False)

    def initiate(self, now: float, wall: float, out: list[Action], retry: bool) -> None:
        """Send a handshake initiation, at most one per REKEY_TIMEOUT."""
        if not retry:
            self.timers.handshake_attempts = 0
        if now - self.last_sent_handshake < REKEY_TIMEOUT:
            return
        dev = self.device
        if dev.identity is None:
            return
        self.last_sent_handshake = now
        dev.free_handshake_index(self)
        index = dev.allocate_index(self, None)
        msg = noise.create_initiation(dev.identity, self.handshake, index, dev.rng, wall)
        if msg is None:
            dev.release_index(index)
            dev.stats.drop(DropReason.LOW_ORDER_KEY)
            self._log(out, "Refusing to send a handshake: the peer's public key is low-order")
            return
        data = self.cookies.add_macs(msg.pack(), now)
        dev.want_prepared(self)  # for a retry or the next rekey
        self.timers.on_any_authenticated_packet_traversal(now)
        self.timers.on_any_authenticated_packet_sent(now)
        if self.endpoint is not None:
            self._log(out, "Sending handshake initiation")
            out.append(SendDatagram(self.endpoint, data))
            self.tx_bytes += len(data)
            dev.stats.initiations_sent += 1
        else:
            self._log(out, "Failed to send handshake initiation: no known endpoint for peer")
        self.timers.on_handshake_initiated(now)

    # -- timers ------------------------------------------------------------
    def on_timer(self, kind: TimerKind, now: float, wall: float, out: list[Action]) -> None:
        t = self.timers
        if kind is TimerKind.RETRANSMIT_HANDSHAKE:
            if t.handshake_attempts > MAX_TIMER_HANDSHAKES:
                self._log(
                    out,
                    f"Handshake did not complete after {MAX_TIMER_HANDSHAKES + 2} attempts, "
                    "giving up",
                )
                t.on_gave_up(now)
                if self.staged:
                    self.device.stats.drop(DropReason.HANDSHAKE_GAVE_UP, len(self.staged))
                    self.staged.clear()
            else:
                t.handshake_attempts += 1
                self._log(
                    out,
                    f"Handshake did not complete after {int(REKEY_TIMEOUT)} seconds, "
                    f"retrying (try {t.handshake_attempts + 1})",
                )
                self.initiate(now, wall, out, retry=True)
        elif kind is TimerKind.SEND_KEEPALIVE:
            self.send_keepalive(now, wall, out)
            t.on_keepalive_sent_by_timer(now)
        elif kind is TimerKind.NEW_HANDSHAKE:
            self._log(
                out,
                "Retrying handshake because we stopped hearing back after "
                f"{int(KEEPALIVE_TIMEOUT + REKEY_TIMEOUT)} seconds",
            )
            self.initiate(now, wall, out, retry=False)
        elif kind is TimerKind.ZERO_KEY_MATERIAL:
            self._log(
                out,
                f"Removing all keys, since we haven't received a new one in "
                f"{int(REJECT_AFTER_TIME * 3)} seconds",
            )
            self.zero_and_flush()
        elif kind is TimerKind.PERSISTENT_KEEPALIVE:
            if t.persistent_keepalive_interval > 0:
                self.send_keepalive(now, wall, out)

    def zero_and_flush(self) -> None:
        """Erase every key and staged packet of this peer (best effort in CPython)."""
        for kp in self.keypairs.clear():
            self.device.release_index(kp.local_index)
        self.device.free_handshake_index(self)
        self.handshake.clear()
        self.staged.clear()

    def expire_current_keypairs(self) -> None:
        """Make the current sessions unusable for sending, forcing a new handshake."""
        self.last_sent_handshake = float("-inf")
        for kp in (self.keypairs.current, self.keypairs.next):
            if kp is not None:
                kp.send_counter = REJECT_AFTER_MESSAGES
