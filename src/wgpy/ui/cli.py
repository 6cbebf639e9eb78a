"""``wgpy ui`` and ``wgpy ui passwd``: argument parsing, safety checks, serving."""

from __future__ import annotations

import argparse
import getpass
import ipaddress
import logging
import ssl
import sys
from pathlib import Path

from wgpy.control.config import parse_allowed_ips, resolve_config_path
from wgpy.control.endpoint import split_host_port
from wgpy.protocol.errors import ConfigError
from wgpy.ui import auth
from wgpy.ui.clientconf import ClientSettings

PROG = "wgpy ui"
DEFAULT_LISTEN = "127.0.0.1:51821"
DEFAULT_STATE = Path("/var/lib/wgpy-ui")

HELP = """\
NAME
    wgpy ui - a web console for WireGuard servers

SYNOPSIS
    wgpy ui [--interface IF | --interface CONFIG_FILE]... [--listen ADDR:PORT]
            [--tls-cert FILE --tls-key FILE | --insecure] [--endpoint HOST[:PORT]]
            [--client-allowed-ips CIDRS] [--client-dns ADDRS] [--client-keepalive N]
            [--state-dir DIR] [--sample-interval SECONDS]
    wgpy ui passwd [--state-dir DIR]

DESCRIPTION
    Serves a web console for one or more WireGuard interfaces and their
    wg-quick configuration files: the peers with name, address, endpoint,
    latest handshake and transfer, with a live traffic chart per peer whose
    history survives restarts; new clients (keys made here, the next free
    address of the interface's Address prefix, the peer added to the file and
    to the running device, its configuration offered as a download and as a
    QR code for the WireGuard phone apps); enable and disable (a disabled
    peer leaves the device and stays in the file, commented out with `#~ '),
    delete, rename, an expiry date, one-time download links, and a change log.

    The devices are reached through their UAPI sockets in /var/run/wireguard
    (wgpyd, wireguard-go or any userspace implementation; not the kernel
    module).  The file is the truth about which peers exist: each change is
    written to it atomically (a temporary file, fsync, rename; mode 0600) and
    then told to the device for that one peer, as `wgpy syncconf' would, so
    other peers' sessions go on.  A file edited by hand while the console
    runs is re-read: a change made from a page that showed an older version
    of it is refused, never written over it.

    Every page works without JavaScript except the live chart.  Everything
    is served from the package's own files.

OPTIONS
    -i, --interface IF|CONFIG_FILE
        An interface to manage (repeatable).  A bare name means
        /etc/wireguard/IF.conf, as for wg-quick; a path must be named
        IF.conf.  Default: every /etc/wireguard/*.conf.
    -l, --listen ADDR:PORT
        Where to serve (default 127.0.0.1:51821).  An address that is not
        loopback is refused unless TLS is given or --insecure is.
    --tls-cert FILE, --tls-key FILE
        Serve HTTPS with this certificate chain and key (PEM).  Cookies are
        then marked Secure.
    --insecure
        Allow plain HTTP on a non-loopback address (only behind a TLS
        proxy you trust: passwords and client keys cross the network).
    --endpoint HOST[:PORT]
        What clients are told to connect to.  Default: the host name the
        admin's browser used, and the interface's ListenPort.
    --client-allowed-ips CIDRS
        AllowedIPs of the clients' configurations (default 0.0.0.0/0, ::/0:
        everything through the tunnel).
    --client-dns ADDRS
        DNS servers for the clients' configurations (default none).
    --client-keepalive N
        PersistentKeepalive of the clients' configurations (default 25; 0:
        off).
    --state-dir DIR
        The password hash and the console's database (default
        /var/lib/wgpy-ui; created 0700).
    --sample-interval SECONDS
        How often transfer counters are recorded and expiry dates checked
        (default 10).

COMMANDS
    passwd  Set the admin password (asked twice on a terminal, else one line
            on standard input).  It is stored as a salted scrypt hash in
            STATE_DIR/password (0600).  Running consoles use the new password
            at the next login.

SECURITY
    The console needs a password (`wgpy ui passwd') before it starts.
    Session cookies are HttpOnly and SameSite=Strict (Secure under TLS);
    every change needs the session's CSRF token; failed logins are limited
    per address (after 5 failures each attempt waits twice as long, up to 15
    minutes) and over all addresses (30 a minute).  The server's private keys
    are never shown; a client's private key appears only in its own download
    and QR code.  Every change is logged (standard error and the change log
    page).  docs/ui.md says more.

FILES
    /etc/wireguard/IF.conf     the interfaces' wg-quick files
    STATE_DIR/password         the admin password's scrypt hash
    STATE_DIR/console.db       clients' private keys, expiry dates, one-time
                               links, traffic history, change log (SQLite)

EXAMPLES
    wgpy ui passwd
    wgpy ui --interface wg0 --endpoint vpn.example.com
    ssh -L 51821:127.0.0.1:51821 server    # then browse http://127.0.0.1:51821
    wgpy ui -i wg0 -i wg1 --listen 0.0.0.0:443 --tls-cert cert.pem --tls-key key.pem
"""


class UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(message)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog=PROG, add_help=False)
    p.add_argument("-h", "--help", action="store_true")
    p.add_argument("-i", "--interface", action="append", default=[])
    p.add_argument("-l", "--listen", default=DEFAULT_LISTEN)
    p.add_argument("--tls-cert")
    p.add_argument("--tls-key")
    p.add_argument("--insecure", action="store_true")
    p.add_argument("--endpoint")
    p.add_argument("--client-allowed-ips", default="0.0.0.0/0, ::/0")
    p.add_argument("--client-dns", default="")
    p.add_argument("--client-keepalive", type=int, default=25)
    p.add_argument("--state-dir", type=Path, default=DEFAULT_STATE)
    p.add_argument("--sample-interval", type=float, default=10.0)
    p.add_argument("--confdir", type=Path, default=Path("/etc/wireguard"), help=argparse.SUPPRESS)
    return p


def main(argv: list[str]) -> int:
    if argv and argv[0] == "passwd":
        return passwd_main(argv[1:])
    try:
        args = _parser().parse_args(argv)
    except UsageError as e:
        sys.stderr.write(f"{PROG}: {e}\nTry `wgpy ui --help'.\n")
        return 1
    if args.help:
        sys.stdout.write(HELP)
        return 0
    try:
        return serve(args)
    except (UsageError, ConfigError, auth.PasswordError) as e:
        sys.stderr.write(f"{PROG}: {e}\n")
        return 1


def listen_address(text: str, tls: bool, insecure: bool) -> tuple[str, int]:
    """Parse ``--listen`` and refuse what would expose secrets in clear text.

    :raises UsageError: with the reason.
    """
    try:
        host, port_text = split_host_port(text)
    except ValueError as e:
        raise UsageError(f"--listen {text}: {e}") from None
    if not (port_text.isascii() and port_text.isdigit()) or not 0 < int(port_text) < 65536:
        raise UsageError(f"--listen {text}: the port is not a number from 1 to 65535")
    if not is_loopback(host) and not tls and not insecure:
        raise UsageError(
            f"refusing to serve on {text} without TLS: the admin password, session "
            "cookies and clients' private keys would cross the network in clear text. Give "
            "--tls-cert and --tls-key, or --insecure if a TLS proxy you trust is in front, "
            "or listen on a loopback address (and use an SSH tunnel)")
    return host, int(port_text)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def client_settings(args: argparse.Namespace) -> ClientSettings:
    host: str | None = None
    port: int | None = None
    if args.endpoint:
        try:
            host, port_text = split_host_port(args.endpoint, port_optional=True)
        except ValueError as e:
            raise UsageError(f"--endpoint {args.endpoint}: {e}") from None
        if port_text:
            if not port_text.isdigit() or not 0 < int(port_text) < 65536:
                raise UsageError(f"--endpoint {args.endpoint}: the port is not 1 to 65535")
            port = int(port_text)
        if not host:
            raise UsageError(f"--endpoint {args.endpoint}: no host")
    try:
        allowed = parse_allowed_ips(args.client_allowed_ips.replace(" ", ""))
    except ValueError as e:
        raise UsageError(f"--client-allowed-ips: {e}") from None
    dns = tuple(d for d in args.client_dns.replace(",", " ").split())
    for d in dns:
        try:
            ipaddress.ip_address(d)
        except ValueError:
            raise UsageError(f"--client-dns: {d!r} is not an IP address") from None
    if not 0 <= args.client_keepalive <= 65535:
        raise UsageError("--client-keepalive: not a number from 0 to 65535")
    return ClientSettings(host, port, tuple(allowed), dns, args.client_keepalive)


def interfaces(args: argparse.Namespace) -> list[tuple[str, Path]]:
    """(name, config path) of each ``--interface``, or of every file in confdir."""
    names = list(args.interface)
    if not names:
        names = sorted(str(p) for p in args.confdir.glob("*.conf"))
        if not names:
            raise UsageError(f"no --interface given and no configuration file in "
                             f"{args.confdir}")
    out: dict[str, Path] = {}
    for n in names:
        path, iface = resolve_config_path(n, args.confdir)
        if iface in out:
            raise UsageError(f"the interface {iface} is given twice")
        out[iface] = path
    return list(out.items())


def tls_check(cert: str | None, key: str | None) -> bool:
    if not cert and not key:
        return False
    if not cert or not key:
        raise UsageError("--tls-cert and --tls-key go together")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        ctx.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as e:
        raise UsageError(f"cannot use --tls-cert {cert} --tls-key {key}: {e}") from None
    return True


def serve(args: argparse.Namespace) -> int:
    tls = tls_check(args.tls_cert, args.tls_key)
    host, port = listen_address(args.listen, tls, args.insecure)
    settings = client_settings(args)
    specs = interfaces(args)
    if args.sample_interval < 0.2:
        raise UsageError("--sample-interval: at least 0.2 seconds")
    password_file = args.state_dir / "password"
    auth.read_password_file(password_file)  # no console without a password
    try:
        import uvicorn

        from wgpy.ui.app import Settings, create_app
        from wgpy.ui.console import Console, InterfaceSpec
        from wgpy.ui.store import Store
    except ImportError as e:
        raise UsageError(f"the web console needs its libraries: pip install 'wgpy[ui]' "
                         f"({e})") from None
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    store = Store(args.state_dir / "console.db")
    console = Console([InterfaceSpec(n, p) for n, p in specs], store, settings)
    app = create_app(console, Settings(password_file, tls, args.sample_interval))
    logging.getLogger("wgpy.ui").info(
        "serving %s on %s://%s/", ", ".join(n for n, _ in specs), "https" if tls else "http",
        args.listen)
    config = uvicorn.Config(app, host=host, port=port, log_config=None, access_log=False,
                            proxy_headers=False, server_header=False,
                            ssl_certfile=args.tls_cert, ssl_keyfile=args.tls_key)
    server = uvicorn.Server(config)
    try:
        server.run()
    finally:
        store.close()
    return 0 if server.started else 1


def passwd_main(argv: list[str]) -> int:
    p = _Parser(prog=f"{PROG} passwd", add_help=False)
    p.add_argument("-h", "--help", action="store_true")
    p.add_argument("--state-dir", type=Path, default=DEFAULT_STATE)
    try:
        args = p.parse_args(argv)
    except UsageError as e:
        sys.stderr.write(f"{PROG} passwd: {e}\n")
        return 1
    if args.help:
        sys.stdout.write(HELP)
        return 0
    if sys.stdin.isatty():
        first = getpass.getpass("New admin password: ")
        if getpass.getpass("Again: ") != first:
            sys.stderr.write(f"{PROG} passwd: the passwords differ; nothing changed\n")
            return 1
    else:
        first = sys.stdin.readline().rstrip("\n")
    try:
        auth.check_new_password(first)
        auth.write_password_file(args.state_dir / "password", auth.hash_password(first))
    except auth.PasswordError as e:
        sys.stderr.write(f"{PROG} passwd: {e}; nothing changed\n")
        return 1
    except OSError as e:
        sys.stderr.write(f"{PROG} passwd: {args.state_dir}: {e.strerror}; nothing changed\n")
        return 1
    sys.stdout.write(f"{PROG}: the admin password is set ({args.state_dir / 'password'})\n")
    return 0

