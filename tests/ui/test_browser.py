"""`wgpy ui` in a real browser (Debian's headless Chromium, driven by Selenium through
its chromedriver), against a running server in a lab namespace:

log in, create a client, read its QR code from a screenshot of the page (zbarimg),
check it is the downloaded configuration, bring that configuration up with the real
wg-quick in a second namespace and ping the server through it, watch the live chart
draw, disable the client and see the ping stop, enable it and see it come back.
A second browser with JavaScript off does the same changes through the forms alone.

Screenshots of the main views are kept in the test's directory (``screenshots/``),
and copied to ``$WGPY_UI_SCREENSHOTS`` when it is set (that is how docs/images/ is
made).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from wgpy.testing.lab import IN_CI, Lab, require
from wgpy.testing.nodes import ping, wgpyd_argv
from wgpy.testing.uilab import (
    PASSWORD,
    LabServer,
    chromium,
    free_port,
    have_chromium,
    wait_http,
)

pytestmark = pytest.mark.netns


def need_browser() -> None:
    require("wg", "wg-quick", "zbarimg")
    if not have_chromium():
        if IN_CI:
            pytest.fail("CI=true but chromium/chromium-driver are not installed (setup.sh)")
        pytest.skip("needs chromium and chromium-driver")


class Console:
    """`wgpy ui` run as the command, in the root namespace on loopback."""

    def __init__(self, lab: Lab, s: LabServer) -> None:
        state = lab.workdir / "state"
        cli = [sys.executable, "-m", "wgpy.tools.cli", "ui"]
        p = subprocess.run([*cli, "passwd", "--state-dir", str(state)], input=PASSWORD + "\n",
                           capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, p.stderr
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        lab.popen(None, [*cli, "-i", str(s.conf), "--listen", f"127.0.0.1:{self.port}",
                         "--state-dir", str(state), "--endpoint", "10.77.0.1",
                         "--client-allowed-ips", "10.66.0.0/24", "--sample-interval", "1"],
                  log="console.log")
        wait_http(self.url + "/login")


@pytest.fixture
def shots(tmp_path: Path) -> Iterator[Path]:
    d = tmp_path / "screenshots"
    d.mkdir()
    yield d
    target = os.environ.get("WGPY_UI_SCREENSHOTS")
    if target:
        for png in d.glob("*.png"):
            shutil.copy(png, Path(target) / png.name)


def wait(what: str, predicate: Any, timeout: float = 15) -> None:
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except (NoSuchElementException, StaleElementReferenceException):
            pass  # the page is being replaced (a form's POST and redirect): look again
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def login(driver: Any, url: str) -> None:
    from selenium.webdriver.common.by import By

    driver.get(url + "/")
    driver.find_element(By.ID, "password").send_keys(PASSWORD)
    driver.find_element(By.ID, "login").click()
    wait("the interface page", lambda: "/if/" in driver.current_url)


def create(driver: Any, name: str) -> None:
    from selenium.webdriver.common.by import By

    driver.find_element(By.ID, "peer_name").send_keys(name)
    driver.find_element(By.ID, "create").click()
    wait("the QR page", lambda: driver.current_url.endswith("/qr"))


def points(driver: Any, css: str) -> list[tuple[float, float]]:
    """The points of a chart's polyline, read in one step (the script redraws it)."""
    text = driver.execute_script(
        "const e = document.querySelector(arguments[0]); return e ? e.getAttribute('points') "
        ": '';", css)
    return [(float(x), float(y)) for x, y in (p.split(",") for p in str(text).split())]


def zbar(png: Path) -> str:
    p = subprocess.run(["zbarimg", "--raw", "-q", "-Sbinary", str(png)], capture_output=True,
                       timeout=60)
    assert p.returncode == 0, f"no QR code found in {png}: {p.stderr!r}"
    return p.stdout.decode()


def test_phone_flow_in_a_real_browser(lab: Lab, tmp_path: Path, shots: Path) -> None:
    need_browser()
    from selenium.webdriver.common.by import By

    s = LabServer(lab)
    s.up()
    console = Console(lab, s)
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    driver = chromium(tmp_path / "profile", downloads=downloads)
    lab.cleanups.append(driver.quit)
    client = lab.name("ph")  # the download's name is the client's interface name
    env = {"WG_QUICK_USERSPACE_IMPLEMENTATION": " ".join(wgpyd_argv()), "WG_SUDO": "1"}

    driver.get(console.url + "/")
    assert "/login" in driver.current_url
    driver.save_screenshot(str(shots / "ui-login.png"))
    login(driver, console.url)
    create(driver, client)
    assert driver.find_element(By.CSS_SELECTOR, ".flash.ok").text.startswith(
        f"Created {client} with 10.66.0.2/32.")
    driver.save_screenshot(str(shots / "ui-qr.png"))
    decoded = zbar(shots / "ui-qr.png")

    driver.find_element(By.ID, "download").click()
    conf = downloads / f"{client}.conf"
    wait("the download", lambda: conf.exists() and not list(downloads.glob("*.crdownload")))
    downloaded = conf.read_text()
    assert decoded == downloaded
    assert "Endpoint = 10.77.0.1:51820\n" in downloaded and "PrivateKey = " in downloaded

    # The phone's part: the real wg-quick brings the configuration up.
    lab.cleanups.append(lambda: None if lab.run(
        s.cli, f"wg-quick down {conf}", check=False, env=env) else None)
    lab.run(s.cli, f"wg-quick up {conf}", env=env, timeout=60)
    ping(lab, s.cli, "10.66.0.1")

    # The peers page and the live chart (drawn by the page's script from the JSON).
    driver.get(f"{console.url}/if/{s.ifname}")
    lab.popen(s.cli, "ping -i 0.2 -c 60 -q 10.66.0.1")  # traffic for the chart
    row = driver.find_element(By.CSS_SELECTOR, "tr[data-peer]")
    assert client in row.text and "10.77.0.2:" in row.text  # its endpoint, from the device
    wait("the sparkline", lambda: len(points(driver, "tr[data-peer] polyline.rx")) >= 2)
    driver.find_element(By.CSS_SELECTOR, "a.peer-name").click()
    wait("the peer page", lambda: "/peer/" in driver.current_url)

    def chart_moves(n: int = 2) -> bool:
        pts = points(driver, "#chart polyline.rx")
        # Not a flat line: received bytes were drawn.
        return len(pts) >= n and len({y for _, y in pts}) >= 2

    wait("the live chart", chart_moves, timeout=20)
    driver.get(f"{console.url}/if/{s.ifname}")
    wait("the sparkline", lambda: len(points(driver, "tr[data-peer] polyline.rx")) >= 3)
    driver.save_screenshot(str(shots / "ui-peers.png"))
    driver.find_element(By.CSS_SELECTOR, "a.peer-name").click()
    wait("a chart of ten samples", lambda: chart_moves(10))
    driver.save_screenshot(str(shots / "ui-peer.png"))

    # Disable: the server drops the peer and the ping stops; enable: it comes back.
    driver.find_element(By.ID, "toggle").click()
    wait("the change", lambda: driver.find_elements(By.CSS_SELECTOR, ".flash.ok"))
    assert driver.find_element(By.CSS_SELECTOR, ".flash.ok").text.startswith(
        f"Disabled {client}.")
    assert not ping(lab, s.cli, "10.66.0.1", count=3, check=False)
    assert f"#~ # Name = {client}" in s.conf.read_text()
    driver.find_element(By.ID, "toggle").click()
    wait("the change", lambda: "Enabled" in driver.find_element(
        By.CSS_SELECTOR, ".flash.ok").text)
    # The server forgot the session with the peer; the client notices the silence
    # (keepalive + rekey timeout, about 15 s) and makes a new handshake.
    lab.wait_for("the tunnel to come back", lambda: ping(
        lab, s.cli, "10.66.0.1", count=1, check=False), timeout=40, step=0.5)

    # No JavaScript at all: the same changes through the forms alone.
    nojs = chromium(tmp_path / "profile-nojs", javascript=False)
    lab.cleanups.append(nojs.quit)
    login(nojs, console.url)
    create(nojs, "no-script")
    assert nojs.find_element(By.CSS_SELECTOR, "#qr svg").size["width"] > 200
    nojs.get(f"{console.url}/if/{s.ifname}")
    rows = nojs.find_elements(By.CSS_SELECTOR, "tr[data-peer]")
    assert [r.find_elements(By.CSS_SELECTOR, "polyline") for r in rows] == [[], []]  # no script
    rows[1].find_element(By.CSS_SELECTOR, "button.disable").click()
    wait("the change", lambda: "Disabled no-script." in nojs.find_element(
        By.CSS_SELECTOR, ".flash.ok").text)
    assert "#~ # Name = no-script" in s.conf.read_text()
    nojs.get(f"{console.url}/log")
    log = nojs.find_element(By.ID, "log").text
    for what in (f"created client '{client}'", f"disabled '{client}'", f"enabled '{client}'",
                 "created client 'no-script'", "disabled 'no-script'"):
        assert what in log
    assert "downloaded the configuration" in lab.log("console.log")
