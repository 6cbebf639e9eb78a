"""Apply a parsed UAPI set to a protocol ``Device``, and describe it for a get.

Pure functions over the core: the caller (the daemon) has already bound any
new listen port, so nothing here can fail half-way.
"""

from __future__ import annotations

from wgpy.control.endpoint import format_endpoint
from wgpy.control.uapi import DeviceInfo, PeerInfo, SetRequest
from wgpy.protocol import Device
from wgpy.protocol.events import Action

# Peers whose first handshake messages one set prepares ahead (Device.want_prepared).
PREPARE_ON_SET = 64


def apply_set(device: Device, req: SetRequest, now: float, wall: float) -> list[Action]:
    """Carry out a validated set request; returns what must be sent as a result."""
    out: list[Action] = []
    if req.private_key_set:
        device.set_private_key(req.private_key)
    if req.listen_port is not None:
        device.listen_port = req.listen_port
    if req.fwmark is not None:
        device.fwmark = req.fwmark
    if req.replace_peers:
        device.remove_all_peers()
    own = device.public_key
    prepared = 0
    for change in req.peers:
        if own is not None and change.public_key == own:
            continue  # wireguard-go ignores a peer with the device's own key
        peer = device.peers.get(change.public_key)
        if change.remove:
            if peer is not None:
                device.remove_peer(change.public_key)
            continue
        added = peer is None
        if peer is None:
            if change.update_only:
                continue
            peer = device.add_peer(change.public_key)
        if change.preshared_key is not None:
            peer.preshared_key = change.preshared_key
        if change.endpoint is not None:
            peer.endpoint = change.endpoint
        # A new peer or an endpoint is a wish to talk: make the first handshake
        # message (ours or our answer) while idle, for a bounded number of
        # peers (a large setconf prepares the rest lazily).
        if (added or change.endpoint is not None) and prepared < PREPARE_ON_SET:
            device.want_prepared(peer)
            prepared += 1
        if change.replace_allowed_ips:
            device.allowed_ips.remove_peer(peer)
        for net in change.removed_ips:
            device.allowed_ips.remove(net, peer)
        for net in change.allowed_ips:
            device.allowed_ips.insert(net, peer)
        if change.persistent_keepalive_interval is not None:
            peer.set_persistent_keepalive(change.persistent_keepalive_interval, now, wall, out)
        out.extend(device.send_staged(peer, now, wall))
    return out


def device_info(device: Device) -> DeviceInfo:
    info = DeviceInfo(
        private_key=device.identity.private if device.identity else None,
        listen_port=device.listen_port,
        fwmark=device.fwmark,
    )
    for peer in device.peers.values():
        sec = nsec = 0
        if peer.last_handshake_wall is not None:
            sec = int(peer.last_handshake_wall)
            nsec = int((peer.last_handshake_wall - sec) * 1e9)
        info.peers.append(
            PeerInfo(
                public_key=peer.public_key,
                preshared_key=peer.preshared_key,
                endpoint=format_endpoint(*peer.endpoint) if peer.endpoint else None,
                last_handshake_time_sec=sec,
                last_handshake_time_nsec=nsec,
                tx_bytes=peer.tx_bytes,
                rx_bytes=peer.rx_bytes,
                persistent_keepalive_interval=peer.persistent_keepalive_interval,
                allowed_ips=[str(n) for n in device.allowed_ips.entries(peer)],
            )
        )
    return info
