"""``faspq dashboard`` in a real browser (Debian's chromium, driven by selenium through chromedriver) while real
transfers run through a real worker to a real fasp-server: rows appear and progress moves, set-rate from the page
slows the engine on the wire, cancel from the page ends a transfer with 28, and nothing answers without the token."""

from __future__ import annotations

import os
import urllib.error
import urllib.request

import pytest
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.expected_conditions import staleness_of
from selenium.webdriver.support.ui import WebDriverWait

from tasks.client import submit
from tasks.dashboard.auth import TOKEN_ENV
from tasks.local import Dashboard
from tests.support.files import assert_same_file
from tests.support.wait import wait_until

from .support import make_file, upload

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",  # as root
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,900",
)


@pytest.fixture(scope="module")
def dashboard(faspq, tmp_path_factory):
    """The dashboard with a token it draws itself (the printed URL is the only way in)."""
    env = {name: value for name, value in os.environ.items() if name != TOKEN_ENV}
    service = Dashboard(tmp_path_factory.mktemp("dashboard"), env)
    try:
        yield service
    finally:
        service.kill()


@pytest.fixture
def browser(tmp_path):
    options = Options()
    options.binary_location = "/usr/bin/chromium"
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def _read(browser, transfer_id: str, script: str):
    """A value of the transfer's row, read in one script (rows are redrawn as the feed moves)."""
    return browser.execute_script(
        f"const row = document.getElementById(arguments[0]); return row ? ({script}) : null;", f"row-{transfer_id}"
    )


def _in_row(browser, transfer_id: str, act) -> None:
    """``act(row element)``, again if the row was redrawn under it."""

    def attempt(_):
        try:
            act(browser.find_element(By.ID, f"row-{transfer_id}"))
            return True
        except StaleElementReferenceException:
            return False

    WebDriverWait(browser, 10).until(attempt)


def _set_rate(browser, transfer_id: str, other_id: str, kbps: int) -> None:
    """Type a rate the way a person does: focus the box, let the feed redraw the page, then type and press."""
    focused = []

    def focus(row):
        box = row.find_element(By.CSS_SELECTOR, "input.rate-input")
        box.click()  # the row stays as it is while its box has the focus
        focused.append(box)

    _in_row(browser, transfer_id, focus)
    box = focused[-1]
    for _ in range(2):  # the other transfer's row is drawn anew on every event of the feed
        WebDriverWait(browser, 20).until(staleness_of(browser.find_element(By.ID, f"row-{other_id}")))
    assert browser.switch_to.active_element == box, "a redraw took the focus from the rate box"
    box.send_keys(str(kbps))
    box.find_element(By.XPATH, "following-sibling::button[contains(@class, 'set-rate')]").click()


def _engine_kbps(handle, since: float, until: float) -> list[float]:
    """The rates the engine measured on the wire (its session stats) between two times."""
    return [
        e["session"]["rate"]
        for e in handle._log.history()
        if "rate" in (e.get("session") or {}) and since <= e["time"] <= until
    ]


def _bytes_kbps(handle, since: float, until: float) -> float:
    """kbps from the engine's byte count between two times (it counts in blocks of 512 KiB: take a long span)."""
    counts = [
        (e["time"], e["session"]["transfer_bytes"])
        for e in handle._log.history()
        if (e.get("session") or {}).get("transfer_bytes") is not None
    ]

    def at(when: float) -> int:
        return max((b for t, b in counts if t <= when), default=0)

    return (at(until) - at(since)) * 8 / 1000 / (until - since)


def _refused(url: str, method: str = "GET", body: bytes | None = None, headers: dict | None = None) -> int:
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return reply.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_the_page_shows_and_steers_running_transfers(worker_factory, server, dashboard, browser, tmp_path):
    worker_factory("dash", concurrency=2)
    steered, doomed = tmp_path / "steered.bin", tmp_path / "doomed.bin"
    make_file(steered, 24_000_000)  # still running when the page steers it, on a slow runner too
    make_file(doomed, 8_000_000)
    # the engines announce the job's size up front (as faspq's orders do), so the page knows totals and ETAs
    fast = submit(upload(server, [steered], "dash", target_rate_kbps=4000, precalculate_job_size=True))  # ~48 s
    slow = submit(upload(server, [doomed], "dash", target_rate_kbps=1000, precalculate_job_size=True))  # ~64 s

    browser.get(dashboard.url)
    base = dashboard.url.split("?", 1)[0]
    assert browser.current_url == base  # the token traded for a cookie, gone from the address bar
    wait = WebDriverWait(browser, 60, poll_frequency=0.2)
    for handle in (fast, slow):  # rows appear, running, owned by the worker on this host
        wait.until(lambda _, h=handle: _read(browser, h.id, "row.querySelector('.state').textContent") == "RUNNING")
        assert _read(browser, handle.id, "row.querySelector('.owner').textContent") == handle.status()["owner"]
        assert _read(browser, handle.id, "row.querySelector('.host').textContent") == os.uname().nodename
    moved = int(wait.until(lambda _: int(_read(browser, fast.id, "row.querySelector('.bytes').dataset.bytes")) or 0))
    wait.until(lambda _: int(_read(browser, fast.id, "row.querySelector('.bytes').dataset.bytes")) > moved)
    assert _read(browser, fast.id, "row.querySelector('.bytes').textContent").endswith("/ 24.0 MB")
    wait.until(lambda _: _read(browser, fast.id, "row.querySelector('.eta').textContent").endswith(" s"))

    _in_row(browser, fast.id, lambda row: row.find_element(By.CSS_SELECTOR, "td.id").click())  # its rate chart
    wait.until(lambda _: int(browser.execute_script("return document.getElementById('chart').dataset.points")) >= 3)

    # without the token: the page, the stream, the snapshot and both controls are refused, and nothing is sent
    for path in ("", "?token=wrong", "api/events", "api/transfers", f"api/transfers/{fast.id}/rate"):
        assert _refused(base + path) == 401, path
    for op in ("rate", "cancel"):
        for headers in ({}, {"Authorization": "Bearer wrong-token-wrong-token"}):
            body = b'{"kbps": 1}'
            headers = {**headers, "Content-Type": "application/json"}
            assert _refused(f"{base}api/transfers/{fast.id}/{op}", "POST", body, headers) == 401

    # set-rate from the page: the worker applies it and the engine slows down on the wire
    _set_rate(browser, fast.id, slow.id, 800)

    def applied():
        return next(
            (e for e in fast._log.history() if e["type"] == "CONTROL" and e["args"] == {"kbps": 800}),
            None,
        )

    assert wait_until(applied, 30, 0.2), fast._log.history()[-5:]
    at = applied()["time"]
    assert wait_until(lambda: fast._log.history()[-1]["time"] > at + 9, 30, 0.2)
    before, after = _engine_kbps(fast, at - 3, at - 0.1), _engine_kbps(fast, at + 1, at + 9)
    assert before and min(before) > 2500 and after and max(after) < 1000, (before, after)
    assert _bytes_kbps(fast, at + 1, at + 9) < 1500  # 800 kbps and at most one block more
    assert applied()["sender"].startswith("tests/dashboard/") and fast.status()["state"] == "RUNNING"

    # cancel from the page: the transfer ends with 28 and the page moves it to the ended list
    _in_row(browser, slow.id, lambda row: row.find_element(By.CSS_SELECTOR, "button.cancel").click())
    result = slow.wait(timeout=60)
    assert not result["ok"] and result["code"] == 28 and result["error"] == "USER_CANCEL"
    assert slow.status()["state"] == "CANCELLED" and result["attempts"] == 1
    ended = "document.querySelector('#ended').contains(row) && row.querySelector('.result').textContent"
    wait.until(lambda _: _read(browser, slow.id, ended) == "CANCELLED 28 USER_CANCEL")
    png = tmp_path / "dashboard.png"  # docs/dashboard.png is one of these
    assert browser.save_screenshot(str(png)) and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # back to full speed from the page, and the file arrives whole
    _set_rate(browser, fast.id, slow.id, 200_000)
    assert fast.wait(timeout=90)["ok"]
    assert_same_file(steered, server.docroot / "dash" / steered.name)
    wait.until(lambda _: _read(browser, fast.id, ended) == "ok")
    assert not browser.find_element(By.ID, "message").text  # no control was refused
