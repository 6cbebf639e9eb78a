"""The console over real HTTP (uvicorn on loopback), used as a browser without
JavaScript uses it: safety by default and bad input.  No device runs here, so
every change also shows how the console says a device is not running; the
device side is in test_console_netns.py and test_browser.py."""

from __future__ import annotations

import datetime
import html
import os
import re
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from wgpy.control.config import parse_quick_config
from wgpy.control.keys import genkey
from wgpy.testing.uilab import PASSWORD, Browserless, console_app, server_config, set_password
from wgpy.ui.cli import _parser, listen_address
from wgpy.ui.console import Console


class Site:
    def __init__(self, url: str, console: Console, conf: Path) -> None:
        self.url, self.console, self.conf = url, console, conf

    def browser(self) -> Browserless:
        return Browserless(self.url)

    def admin(self) -> Browserless:
        b = self.browser()
        r = b.login()
        assert r.status_code == 200 and r.url.path == "/if/wgt0", b.flashes()
        return b


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    conf = tmp_path / "wgt0.conf"
    conf.write_text(server_config())
    with console_app(tmp_path, [conf]) as (url, console):
        yield Site(url, console, conf)


def create(b: Browserless, name: str, iface: str = "wgt0", **extra: str) -> httpx.Response:
    b.get(f"/if/{iface}")
    return b.submit(f"/if/{iface}/create", peer_name=name, **extra)


def private_keys(text: str) -> list[str]:
    return re.findall(r"PrivateKey = (\S+)", text)


# -- 2. safe by default ------------------------------------------------------------


def test_login_wrong_password_then_right_one_and_the_cookie_flags(site: Site) -> None:
    b = site.browser()
    r = b.get("/if/wgt0")
    assert r.url.path == "/login" and "Admin password" in r.text  # nothing without a session
    r = b.submit("/login", password="wrong")
    assert r.status_code == 401 and b.flashes() == ["Wrong password."]
    assert "wgpy_session" not in b.http.cookies
    r = b.submit("/login", password=PASSWORD)
    assert r.status_code == 200 and r.url.path == "/if/wgt0"
    cookie = next(v for v in r.history[0].headers.get_list("set-cookie")
                  if v.startswith("wgpy_session="))
    flags = {f.strip().lower() for f in cookie.split(";")[1:]}
    assert {"httponly", "samesite=strict", "path=/"} <= flags
    assert "secure" not in flags  # plain HTTP on loopback: a Secure cookie would not return
    r = b.submit("/logout")
    assert r.url.path == "/login"
    assert b.get("/if/wgt0").url.path == "/login"


def test_tls_marks_the_session_cookie_secure(tmp_path: Path) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(1)
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1)).sign(key, hashes.SHA256()))
    (tmp_path / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "key.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    conf = tmp_path / "wgt0.conf"
    conf.write_text(server_config())
    with console_app(tmp_path, [conf], tls=(str(tmp_path / "cert.pem"),
                                            str(tmp_path / "key.pem"))) as (url, _):
        assert url.startswith("https://")
        b = Browserless(url, verify=False)
        r = b.login()
        assert r.url.path == "/if/wgt0"
        cookie = next(v for v in r.history[0].headers.get_list("set-cookie")
                      if v.startswith("wgpy_session="))
        assert "secure" in {f.strip().lower() for f in cookie.split(";")}
        b.close()


def test_failed_logins_are_limited(site: Site) -> None:
    b = site.browser()
    b.get("/login")
    for _ in range(5):
        assert b.submit("/login", password="guess").status_code == 401
    r = b.submit("/login", password=PASSWORD)  # even the right password must wait now
    assert r.status_code == 429
    assert re.fullmatch(r"Too many failed logins: try again in \d+ s\.", b.flashes()[0])
    assert "wgpy_session" not in b.http.cookies


def test_login_needs_its_own_form(site: Site) -> None:
    r = httpx.post(f"{site.url}/login", data={"password": PASSWORD})
    assert r.status_code == 403 and "stale or came from another site" in r.text
    assert "wgpy_session" not in r.cookies


def test_every_change_needs_the_session_and_its_csrf_token(site: Site) -> None:
    before = site.conf.read_text()
    anonymous = httpx.post(f"{site.url}/if/wgt0/create", data={"peer_name": "x"})
    assert anonymous.status_code == 403 and "not logged in" in anonymous.text
    b = site.admin()
    fields = b.form("/if/wgt0/create")
    for csrf in (None, "", fields["csrf"][:-2] + "xx"):
        data = {**fields, "peer_name": "mallory"}
        if csrf is None:
            del data["csrf"]
        else:
            data["csrf"] = csrf
        r = b.http.post("/if/wgt0/create", data=data)
        assert r.status_code == 403
        assert "security token is missing or wrong" in r.text and "nothing was changed" in r.text
    # The right token from another site's page (a browser says where a POST comes from).
    r = b.http.post("/if/wgt0/create", data={**fields, "peer_name": "mallory"},
                    headers={"origin": "http://evil.example"})
    assert r.status_code == 403
    assert site.conf.read_text() == before
    r = b.submit("/if/wgt0/create", peer_name="alice")  # and the form itself works
    assert "Created alice" in b.flashes()[0]


def test_private_keys_appear_only_where_they_must(site: Site) -> None:
    server_private = parse_quick_config(site.conf.read_text(), site.conf, "wgt0").device
    assert server_private.private_key is not None
    server_key = server_private.private_key.to_base64()
    b = site.admin()
    r = create(b, "alice")
    assert r.url.path.endswith("/qr")
    qr_page = r.text
    slug = r.url.path.split("/")[-2]
    config = b.get(f"/if/wgt0/peer/{slug}/config")
    assert config.headers["content-disposition"] == 'attachment; filename="alice.conf"'
    assert config.headers["cache-control"] == "no-store"
    [client_key] = private_keys(config.text)
    assert client_key != server_key and client_key in qr_page  # in the QR page's text
    assert "<svg" in qr_page
    pages = {p: b.get(p).text for p in ("/if/wgt0", f"/if/wgt0/peer/{slug}", "/log",
                                        "/api/if/wgt0/traffic")}
    for path, text in {**pages, "qr": qr_page, "config": config.text}.items():
        assert server_key not in text, path
    for path, text in pages.items():
        assert client_key not in text, path
    assert client_key not in site.conf.read_text()  # the server's file has its public key


def test_a_name_with_markup_is_escaped(site: Site) -> None:
    b = site.admin()
    create(b, '<script>alert("x")</script><img src=x onerror=alert(1)>')
    for path in ("/if/wgt0", "/log"):
        text = b.get(path).text
        assert "&lt;script&gt;alert(" in text and "<script>alert" not in text
        assert "<img src=x" not in text
    # The only scripts of any page are the package's own file.
    assert re.findall(r"<script[^>]*>", b.get("/if/wgt0").text) == [
        '<script src="/static/chart.js" defer>']


# -- 5. bad input -----------------------------------------------------------------


def test_a_file_changed_by_hand_is_never_overwritten(site: Site) -> None:
    b = site.admin()
    b.get("/if/wgt0")
    stale = b.form("/if/wgt0/create")
    hand = site.conf.read_text() + "# added by hand while the page was open\n"
    site.conf.write_text(hand)
    r = b.http.post("/if/wgt0/create", data={**stale, "peer_name": "bob"})
    b.page = r.text
    assert "was changed on disk since this page was shown" in b.flashes()[0]
    assert site.conf.read_text() == hand
    create(b, "bob")  # from the page as it is now: the hand edit stays
    text = site.conf.read_text()
    assert text.startswith(hand) and "# Name = bob" in text


def test_a_broken_file_is_reported_and_left_alone(site: Site) -> None:
    b = site.admin()
    broken = site.conf.read_text() + "\n[Peer]\nPublicKey = nonsense\n"
    site.conf.write_text(broken)
    page = html.unescape(b.get("/if/wgt0").text)
    assert re.search(r"wgt0\.conf:\d+: Key is not the correct length or format: `nonsense'"
                     r" \(the console changes nothing until the file is fixed\)", page)
    r = b.http.post("/if/wgt0/create", data={**b.form("/if/wgt0/create"), "peer_name": "c"})
    b.page = r.text
    assert "the console changes nothing until the file is fixed" in b.flashes()[0]
    assert site.conf.read_text() == broken


def test_a_full_address_pool(tmp_path: Path) -> None:
    conf = tmp_path / "wgt0.conf"
    conf.write_text(server_config(address="10.66.0.1/30"))  # room for one client
    with console_app(tmp_path, [conf]) as (url, _):
        b = Browserless(url)
        b.login()
        create(b, "first")
        assert "Created first with 10.66.0.2/32." in b.flashes()[0]
        create(b, "second")
        assert b.flashes()[0] == ("cannot create a client on wgt0: the address pool 10.66.0.0/30 "
                               "of wgt0 is full: its 2 addresses are the server's or its peers'; "
                               "delete a peer or give the interface a shorter prefix")
        assert conf.read_text().count("[Peer]") == 1


def test_bad_names_and_dates(site: Site) -> None:
    b = site.admin()
    before = site.conf.read_text()
    create(b, "x" * 65)
    assert "longer than 64 characters" in b.flashes()[0]
    create(b, "ok", expires="next tuesday")
    assert b.flashes()[0] == "'next tuesday' is not a date (YYYY-MM-DD)"
    assert site.conf.read_text() == before
    r = b.get("/if/wgt0/peer/not-a-key")
    assert r.status_code == 404 and "no such peer" in r.text
    assert b.get("/if/nosuch").status_code == 404


# -- 1. what the console does (file side) ------------------------------------------------


def test_disable_enable_rename_delete_in_the_file(site: Site) -> None:
    b = site.admin()
    r = create(b, "alice")
    peer = r.url.path.rsplit("/", 1)[0]
    b.get(peer)
    b.submit(f"{peer}/disable")
    assert b.flashes()[0].startswith("Disabled alice.")
    text = site.conf.read_text()
    assert "#~ [Peer]\n#~ # Name = alice\n" in text
    assert parse_quick_config(text, site.conf, "wgt0").device.peers == []  # wg-quick: gone
    assert "disabled" in b.get("/if/wgt0").text
    b.get(peer)
    b.submit(f"{peer}/enable")
    assert "[Peer]\n# Name = alice\n" in site.conf.read_text()
    b.get(peer)
    b.submit(f"{peer}/rename", peer_name="alice's phone")
    assert b.flashes()[0] == "Renamed alice to alice's phone."
    assert "# Name = alice's phone\n" in site.conf.read_text()
    b.get(peer)
    r = b.submit(f"{peer}/delete")
    assert r.url.path == "/if/wgt0" and b.flashes()[0].startswith("Deleted alice's phone.")
    assert "[Peer]" not in site.conf.read_text()
    log = b.get("/log").text
    for what in ("created client", "disabled", "enabled", "renamed", "deleted"):
        assert what in log


def test_an_expiry_date_in_the_past_disables_the_peer(site: Site) -> None:
    b = site.admin()
    r = create(b, "temp")
    peer = r.url.path.rsplit("/", 1)[0]
    b.get(peer)
    yesterday = (datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=1)).date()
    b.submit(f"{peer}/expiry", expires=yesterday.isoformat())
    assert "expires" in b.flashes()[0] and "Disabled temp." in b.flashes()[0]
    assert "#~ # Name = temp" in site.conf.read_text()
    assert "expiry: wgt0: disabled 'temp'" in re.sub(r"&#39;", "'", b.get("/log").text.replace(
        "</td><td>", ": "))


def test_a_one_time_link_works_once(site: Site) -> None:
    b = site.admin()
    r = create(b, "carol")
    peer = r.url.path.rsplit("/", 1)[0]
    download = b.get(f"{peer}/config").text
    b.get(peer)
    b.submit(f"{peer}/link")
    url = re.search(r'id="one-time-link" href="([^"]+)"', b.page)
    assert url is not None
    visitor = Browserless(site.url)  # no session: the link is the credential
    landing = visitor.get(httpx.URL(url.group(1)).path)
    assert landing.status_code == 200 and "This link works once" in landing.text
    assert "PrivateKey" not in landing.text  # a link preview takes nothing
    r = visitor.submit(landing.url.path, what="conf")
    assert r.text == download
    assert r.headers["content-disposition"] == 'attachment; filename="carol.conf"'
    again = visitor.http.post(landing.url.path, data={"what": "qr"})
    assert again.status_code == 404 and "used already" in again.text
    assert visitor.get(landing.url.path).status_code == 404
    assert "one-time link used" in b.get("/log").text


def test_several_interfaces_in_one_console(tmp_path: Path) -> None:
    a, c = tmp_path / "wgt0.conf", tmp_path / "wgt1.conf"
    a.write_text(server_config("10.66.0.1/24"))
    c.write_text(server_config("10.67.0.1/24", port=51821))
    with console_app(tmp_path, [a, c]) as (url, _):
        b = Browserless(url)
        b.login()
        nav = re.findall(r'<a href="/if/(wgt\d)"', b.page)
        assert nav == ["wgt0", "wgt1"]
        create(b, "on-one", iface="wgt1")
        assert "Created on-one with 10.67.0.2/32." in b.flashes()[0]
        assert "[Peer]" not in a.read_text() and "# Name = on-one" in c.read_text()
        # The QR page came next: its download link gives the port of wgt1.
        conf_url = re.search(r'href="(/if/wgt1/peer/[^"/]+/config)"', b.page)
        assert conf_url is not None
        assert "Endpoint = 10.77.0.1:51821\n" in b.get(conf_url.group(1)).text


# -- 3. no CDN, no build step, no script but the chart's ------------------------------------


def test_pages_use_only_the_packages_own_files(site: Site) -> None:
    b = site.admin()
    create(b, "dave")
    peer = re.search(r'href="(/if/wgt0/peer/[^"/]+)"', b.get("/if/wgt0").text)
    assert peer is not None
    for path in ("/login", "/if/wgt0", "/log", peer.group(1), peer.group(1) + "/qr"):
        r = b.get(path)
        assert "default-src 'none'" in r.headers["content-security-policy"]
        assert r.headers["cache-control"] == "no-store"
        refs = re.findall(r'(?:src|href|action)="([^"]*)"', r.text)
        assert refs and all(ref.startswith("/") and not ref.startswith("//") for ref in refs), refs
    for asset in ("/static/style.css", "/static/chart.js"):
        r = b.get(asset)
        assert r.status_code == 200 and "http" not in r.text.replace(
            "http://www.w3.org/2000/svg", "")
    assert httpx.get(f"{site.url}/api/if/wgt0/traffic").status_code == 401


# -- the command ------------------------------------------------------------------------------


def wgpy(*args: str, state: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "wgpy.tools.cli", *args, "--state-dir",
                           str(state)], capture_output=True, text=True, timeout=60,
                          env={**os.environ})


def test_the_command_refuses_unsafe_starts(tmp_path: Path) -> None:
    conf = tmp_path / "wgt0.conf"
    conf.write_text(server_config())
    p = wgpy("ui", "-i", str(conf), state=tmp_path / "s")
    assert p.returncode == 1 and p.stderr == (
        f"wgpy ui: no admin password is set ({tmp_path}/s/password does not exist): "
        "run `wgpy ui passwd' first\n")
    set_password(tmp_path / "s")
    p = wgpy("ui", "-i", str(conf), "--listen", "0.0.0.0:8443", state=tmp_path / "s")
    assert p.returncode == 1
    assert p.stderr.startswith("wgpy ui: refusing to serve on 0.0.0.0:8443 without TLS")
    p = wgpy("ui", "-i", str(conf), "--tls-cert", str(conf), state=tmp_path / "s")
    assert p.stderr == "wgpy ui: --tls-cert and --tls-key go together\n"
    p = wgpy("ui", "-i", str(conf), "--tls-cert", str(conf), "--tls-key", str(conf),
             state=tmp_path / "s")
    assert p.returncode == 1 and p.stderr.startswith(f"wgpy ui: cannot use --tls-cert {conf}")
    p = wgpy("ui", "-i", str(tmp_path / "nothere.conf"), state=tmp_path / "s")
    assert p.returncode == 1 and "does not exist" in p.stderr
    assert _parser().parse_args([]).listen == "127.0.0.1:51821"  # loopback unless told
    assert listen_address("0.0.0.0:8443", tls=False, insecure=True) == ("0.0.0.0", 8443)
    assert listen_address("[::]:443", tls=True, insecure=False) == ("::", 443)
    assert listen_address("[::1]:51821", tls=False, insecure=False) == ("::1", 51821)
    assert listen_address("localhost:1", tls=False, insecure=False) == ("localhost", 1)


def test_help() -> None:
    p = subprocess.run([sys.executable, "-m", "wgpy.tools.cli", "ui", "--help"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0
    for part in ("NAME\n    wgpy ui - ", "SYNOPSIS", "OPTIONS", "SECURITY", "FILES", "EXAMPLES",
                 "--insecure", "passwd"):
        assert part in p.stdout
    top = subprocess.run([sys.executable, "-m", "wgpy.tools.cli", "--help"],
                         capture_output=True, text=True, timeout=60)
    assert "  ui: Serves a web console" in top.stdout


def test_names_in_urls_are_keys() -> None:
    from wgpy.ui.console import ConsoleError, key_from_slug, key_slug

    k = genkey(secrets.token_bytes).public_key().to_base64()
    assert key_from_slug(key_slug(k)) == k and "/" not in key_slug(k) and "+" not in key_slug(k)
    with pytest.raises(ConsoleError):
        key_from_slug("../../etc/passwd")
