"""The dashboard in a real browser: Debian's headless Chromium driven by Playwright (no
browser download), one browser for the whole module, against the real gateway with fota-sim
devices and the real cc.

- The overview shows the fleet; a campaign's page follows it live (Server-Sent Events, the page
  never polls), and the operator signs in and presses pause: ``cc status`` says paused.
- A screenshot of the campaign page is not blank (its pixels are counted in the browser).
"""

from __future__ import annotations

import base64
import hashlib
import re
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from playwright.sync_api import Browser, Page, expect, sync_playwright

from ccproc import CC
from dashboard_util import http_base, web_token
from harness import REPO, GatewayProc, publish_image_sync
from test_agent_e2e import CLASS, image_bytes

from proto import manifest

KEY = Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"dashboard key").digest())
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]
DEVICES = 6
PREFIX = "<i>dev"  # device ids come from devices: the page must show them as text, not markup


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)  # fresh temporary profile
        yield b
        b.close()


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("dash")
    token = web_token(tmp / "data", "alice")
    gw = GatewayProc(tmp / "data", ("--http", "127.0.0.1:0")).start()
    sim = None
    try:
        ops = CC(gw, tmp)
        with ThreadPoolExecutor(1) as pool:  # Playwright's sync API holds this thread's loop
            img = pool.submit(publish_image_sync, gw, image_bytes(12_000, 7), KEY, seq=2,
                              device_class=CLASS).result(60)
        trust = manifest.public_bytes(KEY.public_key()).hex()
        log = open(tmp / "sim.log", "wb")
        sim = subprocess.Popen(
            [sys.executable, "-m", "sim.main", "--devices", str(DEVICES), "--gateway",
             gw.device_uri, "--class", CLASS, "--trust", trust, "--state", str(tmp / "sim"),
             "--wake", "1", "--ack-timeout", "0.5", "--block-size", "64",
             "--id-prefix", PREFIX],
            cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        yield {"gw": gw, "ops": ops, "token": token, "base": http_base(gw), "image": img,
               "tmp": tmp}
    finally:
        if sim is not None:
            sim.terminate()
            sim.wait(timeout=20)
        gw.stop()


@pytest.fixture(scope="module")
def page(browser: Browser, fleet: dict[str, Any]) -> Iterator[Page]:
    pg = browser.new_page(viewport={"width": 1280, "height": 1000})
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    yield pg
    pg.close()
    assert not errors, errors  # no script error on any page, no failed request


def overview_live_campaign_and_pause(page: Page, fleet: dict[str, Any]) -> None:
    ops = fleet["ops"]
    page.goto(fleet["base"] + "/#/")
    # the sim's devices register while the page is open: the overview follows the stream
    expect(page.locator("#device-count")).to_have_text(str(DEVICES), timeout=15_000)
    expect(page.locator("#live")).to_have_text("live")
    expect(page.get_by_role("link", name=f"{PREFIX}-000", exact=True)).to_have_count(1)
    assert page.locator("main table i").count() == 0  # no <i> element made from an id
    camp = ops.json("upgrade", fleet["image"]["id"], "--all", "--canary", "1", "--wave", "1",
                    "--max-downloads", "1", "--defer", "1")
    n = camp["id"]
    page.goto(f"{fleet['base']}/#/campaign/{n}")
    expect(page.locator("#campaign-state")).to_have_text("running")
    expect(page.locator("#btn-pause")).to_be_disabled()  # not signed in: no actions
    page.fill("#token", fleet["token"])
    page.click("#signin button")
    expect(page.locator("#who-name")).to_have_text("signed in: alice")
    # live: the page shows devices finishing without a reload or a poll
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    # phases of one device each, released one after the other: pause while some are left
    expect(page.locator("#campaign-done")).to_have_text(re.compile(rf"^[1-{DEVICES // 2}] / "),
                                                        timeout=20_000)
    assert not [u for u in requests if u.endswith("/api/stream")]  # one stream, never reopened
    page.click("#btn-pause")
    expect(page.locator("#campaign-state")).to_have_text("paused")
    status = ops.json("status", str(n))
    assert status["state"] == "paused" and status["reason"] == "paused by the operator"
    assert status["counts"].get("succeeded", 0) < DEVICES
    expect(page.locator("#btn-resume")).to_be_enabled()
    expect(page.locator("#timeline canvas")).to_have_count(1)
    # one device's page: its history from the event log
    page.get_by_role("link", name=f"{PREFIX}-000", exact=True).first.click()
    expect(page.locator("h1")).to_have_text(f"Device {PREFIX}-000")
    expect(page.locator("main")).to_contain_text("registered")
    page.go_back()
    expect(page.locator("#campaign-state")).to_have_text("paused")


def screenshot_is_not_blank(browser: Browser, page: Page, fleet: dict[str, Any]) -> None:
    shot = fleet["tmp"] / "campaign.png"
    png = page.screenshot(path=str(shot), full_page=False)
    # count the picture's colours in the browser itself: a blank page has one or two
    probe = browser.new_page()
    try:
        probe.set_content("<canvas id=c></canvas>")
        stats = probe.evaluate("""async (src) => {
            const img = new Image(); img.src = src; await img.decode();
            const c = document.getElementById('c'); c.width = img.width; c.height = img.height;
            const g = c.getContext('2d'); g.drawImage(img, 0, 0);
            const d = g.getImageData(0, 0, img.width, img.height).data;
            const colours = new Set(); let ink = 0;
            for (let i = 0; i < d.length; i += 4) {
                colours.add((d[i] << 16) | (d[i + 1] << 8) | d[i + 2]);
                if (d[i] + d[i + 1] + d[i + 2] < 600) ink++;
            }
            return {w: img.width, h: img.height, colours: colours.size, ink: ink / (d.length / 4)};
        }""", "data:image/png;base64," + base64.b64encode(png).decode())
    finally:
        probe.close()
    assert (stats["w"], stats["h"]) == (1280, 1000)
    assert stats["colours"] > 50 and stats["ink"] > 0.03, stats


def every_page_renders(page: Page, fleet: dict[str, Any]) -> None:
    base = fleet["base"]
    page.goto(base + "/#/images")
    row = page.locator("main table tr").nth(1)
    expect(row).to_contain_text(fleet["image"]["id"])
    expect(row).to_contain_text("esp32-e2e")
    page.goto(base + "/#/campaigns")
    expect(page.locator("main table tr").nth(1)).to_contain_text("paused")
    page.goto(base + "/#/events")
    expect(page.locator("main")).to_contain_text("pause by alice (dashboard)")
    page.goto(base + "/#/")
    page.fill("#search", f"{PREFIX}-001")
    expect(page.locator("main table").last.locator("tr")).to_have_count(2)  # header + 1
    page.screenshot(path=str(fleet["tmp"] / "overview.png"), full_page=True)  # for people
    page.click("#signout")
    expect(page.locator("#signin")).to_be_visible()


def test_dashboard_in_a_browser(browser: Browser, page: Page, fleet: dict[str, Any]) -> None:
    """One story on one page, in order (one test, so that xdist cannot split it): watch a
    campaign live and pause it, the screenshot is not blank, every page renders."""
    overview_live_campaign_and_pause(page, fleet)
    screenshot_is_not_blank(browser, page, fleet)
    every_page_renders(page, fleet)
