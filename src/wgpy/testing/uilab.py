"""Test support for ``wgpy ui``: a console served for real, a form-filling
HTTP client, and headless Chromium.

``serve`` runs the ASGI app under uvicorn in a thread, on a loopback socket
it binds itself (port 0, so runs never collide), and stops it on exit.
``Browserless`` is an HTTP client that behaves as a browser without
JavaScript: it keeps cookies, reads the hidden fields of the page's forms
and posts them.  ``chromium`` starts Debian's chromium through its
chromedriver with the flags a root, offline, headless run needs.
"""

from __future__ import annotations

import contextlib
import html
import re
import secrets
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from wgpy.control.config import parse_quick_config
from wgpy.control.keys import genkey
from wgpy.testing.lab import Lab
from wgpy.testing.nodes import launch, two_hosts
from wgpy.ui import auth
from wgpy.ui.app import Settings, create_app
from wgpy.ui.clientconf import ClientSettings
from wgpy.ui.console import Console, InterfaceSpec
from wgpy.ui.store import Store

PASSWORD = "correct horse battery"
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


def server_config(address: str = "10.66.0.1/24", port: int = 51820, peers: str = "") -> str:
    """A server's wg-quick file with a fresh key (and the given peer blocks)."""
    key = genkey(secrets.token_bytes).to_base64()
    return (f"[Interface]\n# the lab's server\nPrivateKey = {key}\n"
            f"Address = {address}\nListenPort = {port}\n{peers}")


class LabServer:
    """A WireGuard server in a lab namespace, configured from a wg-quick file the
    console manages: ``srv`` (10.77.0.1, tunnel 10.66.0.1/24) and a second
    namespace ``cli`` (10.77.0.2) on one veth, for clients."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.srv, self.cli = two_hosts(lab)
        self.ifname = lab.wg_name()
        self.conf = lab.workdir / f"{self.ifname}.conf"

    def up(self, peers: str = "", impl: str | None = None) -> None:
        """Write the file, start the device (``device_under_test()``) and apply it."""
        self.conf.write_text(server_config(peers=peers))
        self.conf.chmod(0o600)
        launch(self.lab, self.srv, self.ifname, impl)
        qc = parse_quick_config(self.conf.read_text(), self.conf, self.ifname)
        stripped = self.lab.workdir / f"{self.ifname}.stripped"
        stripped.write_text(qc.stripped())
        self.lab.run(self.srv, f"wg setconf {self.ifname} {stripped}")
        self.lab.run(self.srv, f"ip addr add 10.66.0.1/24 dev {self.ifname} && "
                               f"ip link set {self.ifname} up")

    def wg(self, what: str) -> str:
        return self.lab.run(self.srv, f"wg show {self.ifname} {what}").stdout

    def handshakes(self) -> dict[str, int]:
        return {k: int(v) for k, v in (line.split() for line in self.wg(
            "latest-handshakes").splitlines())}


def set_password(state: Path, password: str = PASSWORD) -> Path:
    """A password file, hashed with a small scrypt cost to keep tests quick."""
    path = state / "password"
    auth.write_password_file(path, auth.hash_password(password, log2n=10))
    return path


@contextlib.contextmanager
def serve(app: Any, certfile: str | None = None, keyfile: str | None = None
          ) -> Iterator[str]:
    """Serve ``app`` on 127.0.0.1 (a free port); yield its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="on",
                            ssl_certfile=certfile, ssl_keyfile=keyfile)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the console did not start")
        time.sleep(0.02)
    try:
        yield f"{'https' if certfile else 'http'}://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@contextlib.contextmanager
def console_app(workdir: Path, conf_files: list[Path],
                settings: ClientSettings | None = None, sample_interval: float = 0.5,
                tls: tuple[str, str] | None = None) -> Iterator[tuple[str, Console]]:
    """A console over ``conf_files`` with a fresh state directory, served."""
    state = workdir / "state"
    password = set_password(state)
    store = Store(state / "console.db")
    console = Console([InterfaceSpec(p.name[:-5], p) for p in conf_files], store,
                      settings or ClientSettings(endpoint_host="10.77.0.1"))
    app = create_app(console, Settings(password, tls is not None, sample_interval))
    try:
        with serve(app, *(tls or (None, None))) as url:
            yield url, console
    finally:
        store.close()


class _Forms(HTMLParser):
    """The forms of a page: action -> {name: value} of their inputs."""

    def __init__(self) -> None:
        super().__init__()
        self.forms: list[tuple[str, dict[str, str]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self.forms.append((a.get("action", ""), {}))
        elif tag == "input" and self.forms and "name" in a:
            self.forms[-1][1][a["name"]] = a.get("value", "")


class Browserless:
    """An HTTP client that uses the console as a browser without JavaScript does."""

    def __init__(self, base: str, verify: bool = True) -> None:
        self.base = base
        self.http = httpx.Client(base_url=base, follow_redirects=True, timeout=30,
                                 verify=verify)
        self.page = ""

    def close(self) -> None:
        self.http.close()

    def get(self, path: str) -> httpx.Response:
        r = self.http.get(path)
        self.page = r.text
        return r

    def form(self, action: str) -> dict[str, str]:
        """The fields of the form posting to ``action`` on the current page."""
        p = _Forms()
        p.feed(self.page)
        for act, fields in p.forms:
            if act == action:
                return dict(fields)
        raise AssertionError(f"no form to {action} on the page")

    def submit(self, action: str, **values: str) -> httpx.Response:
        """Post the form as the page holds it, with ``values`` typed in."""
        data = {**self.form(action), **values}
        r = self.http.post(action, data=data)
        self.page = r.text
        return r

    def login(self, password: str = PASSWORD) -> httpx.Response:
        self.get("/login")
        return self.submit("/login", password=password)

    def flashes(self) -> list[str]:
        """The page's messages, as text (the outcome of a change comes first)."""
        return [html.unescape(re.sub(r"\s+", " ", m)) for m in re.findall(
            r'<p class="flash[^"]*"[^>]*>(.*?)</p>', self.page, re.S)]


def have_chromium() -> bool:
    return shutil.which(CHROMIUM) is not None and shutil.which(CHROMEDRIVER) is not None


def chromium(profile: Path, javascript: bool = True, downloads: Path | None = None,
             size: tuple[int, int] = (1100, 900)) -> Any:
    """Headless Chromium (Debian's) driven by its chromedriver; quit it when done."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--no-default-browser-check",
                 "--disable-extensions", "--disable-features=Translate,MediaRouter",
                 f"--user-data-dir={profile}", f"--window-size={size[0]},{size[1]}",
                 "--hide-scrollbars", "--force-device-scale-factor=1"):
        opts.add_argument(flag)
    prefs: dict[str, Any] = {}
    if not javascript:
        prefs["profile.managed_default_content_settings.javascript"] = 2
    if downloads is not None:
        prefs.update({"download.default_directory": str(downloads),
                      "download.prompt_for_download": False})
    if prefs:
        opts.add_experimental_option("prefs", prefs)
    service = Service(executable_path=CHROMEDRIVER)
    return webdriver.Chrome(options=opts, service=service)


def free_port() -> int:
    """A loopback TCP port free now (for a console run as its own process)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=2)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout} s")
