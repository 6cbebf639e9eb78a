"""What the console does, without the web: views and changes of interfaces.

Theory of operation: the configuration file is the truth about which peers
exist and which are enabled (``ui.document``); the running device is told
about each change as ``wgpy syncconf`` would tell it, one peer at a time,
so no other peer's session is touched; the store keeps what the file cannot
(``ui.store``).  A change, under one lock:

1. reads the file afresh; if the page the admin acted on showed another
   version of it, or it no longer parses, nothing is done and the reason is
   given (the file was edited by hand meanwhile);
2. computes the new text and checks it (``document``);
3. writes it atomically, refusing if it changed again meanwhile
   (``conffile.write``);
4. tells the device through the UAPI; a device that is not running is not
   an error for the file: the message says the change waits for the next
   ``wg-quick up``;
5. logs who did what (never a key other than public ones).

The device is reached only through the UAPI socket, so anything that
speaks it works: wgpyd, wireguard-go, boringtun.
"""

from __future__ import annotations

import ipaddress
import logging
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from wgpy.control.config import DeviceConfig, PeerConfig, sync_with, to_uapi
from wgpy.control.keys import InvalidKey, Key, genkey, genpsk
from wgpy.control.uapi import SOCKET_DIR, DeviceInfo, PeerInfo, UapiError, UapiProtocolError
from wgpy.control.uapi_client import UapiClient
from wgpy.protocol.errors import ConfigError
from wgpy.ui import conffile, document
from wgpy.ui.clientconf import ClientConfig, ClientSettings, format_endpoint_host
from wgpy.ui.document import Document
from wgpy.ui.pool import Pool, PoolError
from wgpy.ui.store import ClientRecord, Store

LOG = logging.getLogger("wgpy.ui")


class ConsoleError(Exception):
    """A change was refused or failed; the message says why, for the page."""


class StalePage(ConsoleError):
    """The file changed since the page was shown: nothing was done."""


@dataclass(frozen=True)
class InterfaceSpec:
    name: str
    path: Path


@dataclass
class PeerView:
    public_key: str
    name: str = ""
    enabled: bool = True
    in_file: bool = True
    on_device: bool = False
    addresses: list[str] = field(default_factory=list)
    endpoint: str | None = None
    latest_handshake: float = 0.0  # Unix time, 0: never
    rx: int = 0
    tx: int = 0
    created: float | None = None
    expires: float | None = None
    has_config: bool = False  # the console made it and knows its private key

    @property
    def slug(self) -> str:
        return key_slug(self.public_key)

    @property
    def drift(self) -> str:
        """How the device differs from the file for this peer ("" if it does not)."""
        if self.in_file and self.enabled and not self.on_device:
            return "in the file but not on the device"
        if self.in_file and not self.enabled and self.on_device:
            return "disabled in the file but still on the device"
        if not self.in_file:
            return "on the device but not in the file"
        return ""


@dataclass
class InterfaceView:
    name: str
    path: Path
    version: str = ""
    file_error: str = ""
    device_error: str = ""
    listen_port: int = 0
    public_key: str = ""
    addresses: list[str] = field(default_factory=list)
    peers: list[PeerView] = field(default_factory=list)

    @property
    def drift(self) -> bool:
        return not self.device_error and any(p.drift for p in self.peers)


def key_slug(public_key: str) -> str:
    """A public key as it appears in URLs (base64url, no padding)."""
    return public_key.rstrip("=").replace("+", "-").replace("/", "_")


def key_from_slug(slug: str) -> str:
    """:raises ConsoleError: not a key."""
    text = slug.replace("-", "+").replace("_", "/") + "="
    try:
        return Key.from_base64(text).to_base64()
    except InvalidKey:
        raise ConsoleError("no such peer") from None


class Console:
    def __init__(self, interfaces: list[InterfaceSpec], store: Store,
                 settings: ClientSettings | None = None,
                 socket_dir: Path = SOCKET_DIR, clock: Callable[[], float] = time.time,
                 link_ttl: float = 7 * 86400) -> None:
        self.interfaces = {i.name: i for i in interfaces}
        self.store = store
        self.settings = settings or ClientSettings()
        self.socket_dir = socket_dir
        self.clock = clock
        self.link_ttl = link_ttl
        self.lock = threading.Lock()

    # -- reading -------------------------------------------------------------
    def spec(self, name: str) -> InterfaceSpec:
        try:
            return self.interfaces[name]
        except KeyError:
            raise ConsoleError(f"no interface {name!r} in this console") from None

    def device(self, name: str) -> DeviceInfo:
        """:raises ConsoleError: the device is not running or does not answer."""
        try:
            return UapiClient(name, self.socket_dir, timeout=5).get()
        except (UapiError, UapiProtocolError, OSError) as e:
            raise ConsoleError(f"the device {name} is not running or does not answer "
                               f"({e})") from None

    def _document(self, spec: InterfaceSpec) -> tuple[conffile.Snapshot, Document]:
        try:
            snap = conffile.read(spec.path)
        except OSError as e:
            raise ConsoleError(f"{spec.path}: {e.strerror}") from None
        try:
            return snap, document.parse(snap.text, spec.path, spec.name)
        except ConfigError as e:
            raise ConsoleError(f"{e} (the console changes nothing until the file is "
                               "fixed)") from None

    def view(self, name: str) -> InterfaceView:
        spec = self.spec(name)
        v = InterfaceView(spec.name, spec.path)
        doc: Document | None = None
        try:
            snap, doc = self._document(spec)
            v.version = snap.version
            v.addresses = list(doc.quick.addresses)
        except ConsoleError as e:
            v.file_error = str(e)
        info: DeviceInfo | None = None
        try:
            info = self.device(name)
            v.listen_port = info.listen_port
            if info.private_key is not None:
                v.public_key = Key(info.private_key).public_key().to_base64()
        except ConsoleError as e:
            v.device_error = str(e)
        if not v.public_key and doc is not None and doc.quick.device.private_key is not None:
            pk = doc.quick.device.private_key
            v.public_key = "" if pk.is_zero() else pk.public_key().to_base64()
        records = self.store.clients(name)
        live = {Key(p.public_key).to_base64(): p for p in (info.peers if info else [])}
        for block in doc.peers if doc else []:
            pv = PeerView(block.public_key, block.name, block.enabled,
                          addresses=list(block.allowed_ips))
            _merge(pv, live.pop(block.public_key, None), records.get(block.public_key))
            v.peers.append(pv)
        if doc is not None:  # an unreadable file says nothing about what is missing from it
            for key, peer in live.items():
                pv = PeerView(key, in_file=False, addresses=list(peer.allowed_ips))
                _merge(pv, peer, records.get(key))
                v.peers.append(pv)
        return v

    def peer(self, name: str, public_key: str) -> PeerView:
        for p in self.view(name).peers:
            if p.public_key == public_key:
                return p
        raise ConsoleError(f"no peer {public_key} on {name}")

    # -- changes ---------------------------------------------------------------
    def _begin(self, name: str, version: str | None) -> tuple[InterfaceSpec, conffile.Snapshot,
                                                               Document]:
        spec = self.spec(name)
        snap, doc = self._document(spec)
        if version is not None and version != snap.version:
            raise StalePage(
                f"{spec.path} was changed on disk since this page was shown (edited by "
                "hand?): nothing was done; the page now shows the file as it is, check it "
                "and try again")
        return spec, snap, doc

    def _write(self, snap: conffile.Snapshot, text: str) -> None:
        try:
            conffile.write(snap, text)
        except conffile.FileChanged as e:
            raise StalePage(str(e)) from None
        except OSError as e:
            raise ConsoleError(f"could not write {snap.path}: {e.strerror}; "
                               "the file is unchanged") from None

    def _tell_device(self, name: str, lines: list[str]) -> str:
        """Apply to the device; '' on success, else why the change waits."""
        try:
            UapiClient(name, self.socket_dir, timeout=5).set(lines)
        except (UapiError, UapiProtocolError, OSError) as e:
            return (f" The file is saved, but the device {name} did not take the change "
                    f"({e}): it applies when the interface is next brought up.")
        return ""

    def _log(self, who: str, message: str) -> None:
        LOG.info("%s: %s", who, message)
        self.store.log(self.clock(), who, message)

    def create_client(self, name: str, peer_name: str, who: str, version: str | None,
                      host: str | None = None, expires: float | None = None) -> tuple[str, str]:
        """Make a client: keys, the next free address, file, device, store.

        :returns: (its public key, the message for the page)
        """
        with self.lock:
            spec, snap, doc = self._begin(name, version)
            try:
                peer_name = document.check_name(peer_name)
                addresses = Pool.from_addresses(name, doc.quick.addresses).allocate(
                    [a for b in doc.peers for a in b.allowed_ips])
            except (ValueError, PoolError) as e:
                raise ConsoleError(f"cannot create a client on {name}: {e}") from None
            self._server_key(name, doc)  # fail before anything is written
            private, psk = genkey(secrets.token_bytes), genpsk(secrets.token_bytes)
            public = private.public_key()
            text = document.add_peer(doc, peer_name, public, psk, addresses)
            rec = ClientRecord(name, public.to_base64(), private.to_base64(), self.clock(),
                               expires)
            self.store.add_client(rec)
            try:
                self._write(snap, text)
            except ConsoleError:
                self.store.forget(name, rec.public_key)
                raise
            pc = PeerConfig(public_key=public, preshared_key=psk, replace_allowed_ips=True,
                            allowed_ips=addresses)
            note = self._tell_device(name, to_uapi(DeviceConfig(peers=[pc])))
            self._log(who, f"{name}: created client {peer_name!r} ({rec.public_key}, "
                           f"{', '.join(addresses)})")
            return rec.public_key, f"Created {peer_name} with {', '.join(addresses)}.{note}"

    def set_enabled(self, name: str, public_key: str, enabled: bool, who: str,
                    version: str | None) -> str:
        with self.lock:
            return self._set_enabled(name, public_key, enabled, who, version)

    def _set_enabled(self, name: str, public_key: str, enabled: bool, who: str,
                     version: str | None) -> str:
        spec, snap, doc = self._begin(name, version)
        block = self._block(doc, public_key)
        text = document.set_enabled(doc, public_key, enabled)
        if text != snap.text:
            self._write(snap, text)
        if enabled:
            new = document.parse(text, spec.path, name)
            pc = next(p for p in new.quick.device.peers
                      if p.public_key is not None and p.public_key.to_base64() == public_key)
            note = self._tell_device(name, to_uapi(DeviceConfig(peers=[pc])))
        else:
            note = self._tell_device(name, [f"public_key={Key.from_base64(public_key).hex()}",
                                            "remove=true"])
        label = block.name or public_key
        self._log(who, f"{name}: {'enabled' if enabled else 'disabled'} {label!r} ({public_key})")
        return f"{'Enabled' if enabled else 'Disabled'} {label}.{note}"

    def delete(self, name: str, public_key: str, who: str, version: str | None) -> str:
        with self.lock:
            spec, snap, doc = self._begin(name, version)
            block = self._block(doc, public_key)
            self._write(snap, document.remove_peer(doc, public_key))
            self.store.forget(name, public_key)
            note = self._tell_device(name, [f"public_key={Key.from_base64(public_key).hex()}",
                                            "remove=true"])
            label = block.name or public_key
            self._log(who, f"{name}: deleted {label!r} ({public_key})")
            return f"Deleted {label}.{note}"

    def rename(self, name: str, public_key: str, new_name: str, who: str,
               version: str | None) -> str:
        with self.lock:
            spec, snap, doc = self._begin(name, version)
            block = self._block(doc, public_key)
            try:
                new_name = document.check_name(new_name)
            except ValueError as e:
                raise ConsoleError(f"cannot rename: {e}") from None
            self._write(snap, document.rename_peer(doc, public_key, new_name))
            self._log(who, f"{name}: renamed {block.name!r} to {new_name!r} ({public_key})")
            return f"Renamed {block.name or public_key} to {new_name}."

    def set_expiry(self, name: str, public_key: str, expires: float | None, who: str) -> str:
        with self.lock:
            _spec, _snap, doc = self._begin(name, None)
            block = self._block(doc, public_key)
            self.store.set_expiry(name, public_key, expires, self.clock())
            when = "never" if expires is None else _utc(expires)
            label = block.name or public_key
            self._log(who, f"{name}: {label!r} ({public_key}) expires {when}")
            return f"{label} expires {when}."

    def sync(self, name: str, who: str, version: str | None) -> str:
        """``wgpy syncconf``: make the device match the file; live sessions stay."""
        with self.lock:
            _spec, _snap, doc = self._begin(name, version)
            info = self.device(name)
            dev = sync_with(doc.quick.device, info)
            try:
                UapiClient(name, self.socket_dir, timeout=5).set(to_uapi(dev))
            except (UapiError, UapiProtocolError, OSError) as e:
                raise ConsoleError(f"the device {name} refused the file: {e}") from None
            self._log(who, f"{name}: applied {doc.path} to the device (syncconf)")
            return f"The device {name} now matches {doc.path}."

    def expire_due(self, who: str = "expiry") -> list[str]:
        """Disable every enabled peer whose expiry date has passed."""
        now = self.clock()
        done = []
        for name in self.interfaces:
            for rec in self.store.clients(name).values():
                if rec.expires is None or rec.expires > now:
                    continue
                try:
                    with self.lock:
                        _s, _snap, doc = self._begin(name, None)
                        block = doc.find(rec.public_key)
                        if block.enabled:
                            done.append(self._set_enabled(name, rec.public_key, False, who,
                                                          None))
                except (ConsoleError, KeyError) as e:
                    LOG.warning("%s: cannot disable expired peer %s: %s", name, rec.public_key,
                                e)
        return done

    def _block(self, doc: Document, public_key: str) -> document.PeerBlock:
        try:
            return doc.find(public_key)
        except KeyError:
            raise ConsoleError(
                f"no peer {public_key} in {doc.path} (deleted by hand?); the page now "
                "shows the file as it is") from None

    def _server_key(self, name: str, doc: Document) -> Key:
        pk = doc.quick.device.private_key
        if pk is not None and not pk.is_zero():
            return pk.public_key()
        try:
            info = self.device(name)
        except ConsoleError:
            info = None
        if info is not None and info.private_key is not None:
            return Key(info.private_key).public_key()
        raise ConsoleError(f"{doc.path} has no PrivateKey and the device {name} is not "
                           "running: the server's public key is unknown")

    # -- client configurations ---------------------------------------------------------
    def client_config(self, name: str, public_key: str, host: str | None) -> ClientConfig:
        """The client's own wg-quick file (with its private key: handle with care).

        :raises ConsoleError: the console did not make this peer, or it is gone.
        """
        _spec, _snap, doc = self._begin(name, None)
        block = self._block(doc, public_key)
        rec = self.store.client(name, public_key)
        if rec is None or rec.private_key is None:
            raise ConsoleError(
                f"{block.name or public_key} was not created by this console: its private "
                "key is not known here, so there is no configuration to offer")
        s = self.settings
        port = s.endpoint_port or doc.quick.device.listen_port or self._live_port(name)
        ep_host = s.endpoint_host or host
        if not port or not ep_host:
            raise ConsoleError(f"{name} has no ListenPort: clients cannot reach it; set "
                               "ListenPort in its file or start the console with --endpoint "
                               "HOST:PORT")
        psk = Key.from_base64(block.preshared_key) if block.preshared_key else None
        return ClientConfig(Key.from_base64(rec.private_key), _client_addresses(block),
                            self._server_key(name, doc),
                            format_endpoint_host(ep_host, port), psk, s)

    def _live_port(self, name: str) -> int:
        try:
            return self.device(name).listen_port
        except ConsoleError:
            return 0

    def make_link(self, name: str, public_key: str, who: str) -> str:
        """A one-time download link's token for a client the console made."""
        with self.lock:
            self.client_config(name, public_key, "localhost")  # refuses early what it can't do
            token = secrets.token_urlsafe(24)
            self.store.add_link(token, name, public_key, self.clock() + self.link_ttl)
            self._log(who, f"{name}: made a one-time download link for {public_key}, "
                           f"valid until {_utc(self.clock() + self.link_ttl)}")
            return token

    # -- traffic ----------------------------------------------------------------------
    def sample(self) -> None:
        """Record every running device's per-peer counters."""
        now = self.clock()
        for name in self.interfaces:
            try:
                info = self.device(name)
            except ConsoleError:
                continue
            self.store.add_samples(name, now, {Key(p.public_key).to_base64():
                                               (p.rx_bytes, p.tx_bytes) for p in info.peers})


def _merge(pv: PeerView, peer: PeerInfo | None, rec: ClientRecord | None) -> None:
    if peer is not None:
        pv.on_device = True
        pv.endpoint = peer.endpoint
        pv.latest_handshake = peer.last_handshake_time_sec + peer.last_handshake_time_nsec / 1e9
        pv.rx, pv.tx = peer.rx_bytes, peer.tx_bytes
    if rec is not None:
        pv.created, pv.expires = rec.created, rec.expires
        pv.has_config = rec.private_key is not None


def _client_addresses(block: document.PeerBlock) -> list[str]:
    """A client's Address lines: its allowed IPs as host addresses."""
    out = []
    for a in block.allowed_ips:
        try:
            out.append(str(ipaddress.ip_interface(a)))
        except ValueError:
            out.append(a)
    return out


def _utc(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(ts))
