"""example_app.py end to end in headless Chromium.

Debian's ``chromium`` and ``chromium-driver`` drive the page; the Socket.IO
browser client is the npm package ``socket.io-client`` that ``.ci/run``
installs next to example_app.py. Nothing is downloaded by the test.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import free_port
from conftest import wait_for_port
from selenium import webdriver
from selenium.common.exceptions import NoSuchElementException
from selenium.common.exceptions import StaleElementReferenceException
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

ROOT = Path(__file__).resolve().parent.parent
CLIENT = ROOT / "node_modules" / "socket.io-client" / "dist" / "socket.io.min.js"
#: Shown in README.rst; rewritten by every run of this test.
SCREENSHOT = Path(__file__).resolve().parent / "screenshots" / "example_app.png"
DEVICES_SCREENSHOT = SCREENSHOT.with_name("devices.png")


def serve(tmp_path, script=ROOT / "example_app.py"):
    port = free_port()
    env = dict(
        os.environ,
        PORT=str(port),
        SECRET_KEY="browser-test",
        SESSION_BRIDGE_STORE=f"sqlite:///{tmp_path / 'sessions.db'}",
    )
    process = subprocess.Popen([sys.executable, str(script)], env=env)
    try:
        wait_for_port(port, timeout=30)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(10)


@pytest.fixture
def example_app(tmp_path):
    if not CLIENT.is_file():
        pytest.fail(
            "socket.io-client is not installed: run"
            " 'npm install --no-save --no-package-lock socket.io-client@4' in the repository"
        )
    yield from serve(tmp_path)


def launch(profile, user_agent=None):
    binary, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if binary is None or driver is None:
        pytest.fail("Chromium is not installed (apt-get install -y chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    # The system browser in a closed network: no sandbox (root in CI), no
    # background calls home that the network would refuse.
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync",
                 "--window-size=900,900", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    if user_agent is not None:
        options.add_argument(f"--user-agent={user_agent}")
    return webdriver.Chrome(options=options, service=Service(executable_path=driver))


@pytest.fixture
def chromium(tmp_path):
    browser = launch(tmp_path / "profile")
    try:
        yield browser
    finally:
        browser.quit()


def text(browser, element_id):
    return browser.find_element(By.ID, element_id).text


def wait_text(browser, element_id, expected):
    # While a form post reloads the page, the element is missing or belongs
    # to the old page (stale): both mean "not yet".
    wait = WebDriverWait(
        browser, 10, ignored_exceptions=(NoSuchElementException, StaleElementReferenceException)
    )
    try:
        wait.until(lambda b: text(b, element_id) == expected)
    except TimeoutException:
        pytest.fail(f"#{element_id} shows {text(browser, element_id)!r}, not {expected!r}")


def wait_connected(browser):
    wait_text(browser, "status", "connected")


def wait_anonymous(browser):
    # Connected, but the page says what matters: nobody is logged in.
    wait_text(browser, "status", "not logged in")


def click(browser, element_id):
    browser.find_element(By.ID, element_id).click()


def test_two_tabs_share_one_live_session(example_app, chromium):
    browser = chromium
    browser.get(example_app)
    # The page loads the installed client, not the CDN.
    script = browser.find_element(By.CSS_SELECTOR, "script[src]").get_attribute("src")
    assert script == f"{example_app}/socket.io-client.js"
    wait_anonymous(browser)

    browser.find_element(By.ID, "login-name").send_keys("Ada")
    click(browser, "login-submit")
    wait_text(browser, "user", "Ada")
    # The socket of the page after login is in the logged-in session.
    wait_connected(browser)

    for expected in ("1", "2", "3"):
        click(browser, "socket-inc")
        wait_text(browser, "socket-count", expected)
    for expected in ("1", "2"):
        click(browser, "http-inc")
        wait_text(browser, "http-count", expected)
    first = browser.current_window_handle

    # A second tab of the same browser is the same session.
    browser.switch_to.new_window("tab")
    second = browser.current_window_handle
    browser.get(example_app)
    wait_connected(browser)
    wait_text(browser, "user", "Ada")
    wait_text(browser, "socket-count", "3")
    wait_text(browser, "http-count", "2")

    # A change in either tab shows in the other, over the other's socket.
    click(browser, "socket-inc")
    wait_text(browser, "socket-count", "4")
    browser.switch_to.window(first)
    wait_text(browser, "socket-count", "4")
    click(browser, "http-inc")
    wait_text(browser, "http-count", "3")
    browser.switch_to.window(second)
    wait_text(browser, "http-count", "3")
    click(browser, "socket-inc")
    browser.switch_to.window(first)
    wait_text(browser, "socket-count", "5")
    SCREENSHOT.parent.mkdir(exist_ok=True)
    browser.save_screenshot(str(SCREENSHOT))

    # Logging out in one tab ends the other tab's session over its socket;
    # the page reconnects, anonymous now.
    click(browser, "logout")
    browser.switch_to.window(second)
    WebDriverWait(browser, 10).until(
        lambda b: b.execute_script("return document.body.dataset.ended") == "logout"
    )
    wait_anonymous(browser)
    assert not browser.find_element(By.ID, "live").is_displayed()
    assert browser.find_element(By.ID, "login-name").is_displayed()
    state = browser.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "socket.emit('state', done);"
    )
    assert state == {"user": None, "http_count": 0, "socket_count": 0}

    # A login in this tab: the page reloads into the new session. The first
    # tab's socket, anonymous, stays out of it until that page reloads too.
    browser.find_element(By.ID, "login-name").send_keys("Bob")
    click(browser, "login-submit")
    wait_text(browser, "user", "Bob")
    wait_connected(browser)
    click(browser, "socket-inc")
    wait_text(browser, "socket-count", "1")
    browser.switch_to.window(first)
    assert browser.find_element(By.ID, "login-name").is_displayed()
    browser.refresh()
    wait_connected(browser)
    wait_text(browser, "user", "Bob")
    wait_text(browser, "socket-count", "1")


def rows(browser):
    return browser.find_elements(By.CSS_SELECTOR, "#devices tr")


def wait_rows(browser, count):
    try:
        WebDriverWait(browser, 10, ignored_exceptions=(StaleElementReferenceException,)).until(
            lambda b: len(rows(b)) == count
        )
    except TimeoutException:
        pytest.fail(f"{len(rows(browser))} devices listed, not {count}")


def test_your_devices_ends_another_device_live(example_app, tmp_path):
    """Two Chromium profiles are two devices of one user."""
    laptop = launch(tmp_path / "laptop", "Mozilla/5.0 (X11; Linux x86_64) Chromium (laptop)")
    phone = launch(tmp_path / "phone", "Mozilla/5.0 (Linux; Android 14; Pixel 8) (phone)")
    try:
        for browser in (laptop, phone):
            browser.get(example_app)
            wait_anonymous(browser)
            browser.find_element(By.ID, "login-name").send_keys("Ada")
            click(browser, "login-submit")
            wait_text(browser, "user", "Ada")
            wait_connected(browser)
        wait_rows(phone, 2)
        # The laptop heard of the phone's login over its socket.
        wait_rows(laptop, 2)
        current = phone.find_element(By.CSS_SELECTOR, "#devices tr.current")
        assert current.find_element(By.CSS_SELECTOR, ".this").text == "this device"
        assert "phone" in current.find_element(By.CSS_SELECTOR, ".browser").text
        other = next(r for r in rows(phone) if "current" not in r.get_attribute("class"))
        assert "laptop" in other.find_element(By.CSS_SELECTOR, ".browser").get_attribute("title")
        DEVICES_SCREENSHOT.parent.mkdir(exist_ok=True)
        phone.save_screenshot(str(DEVICES_SCREENSHOT))

        # "End" on the phone logs the laptop's tab out at once.
        other.find_element(By.CSS_SELECTOR, "button.end").click()
        WebDriverWait(laptop, 10).until(
            lambda b: b.execute_script("return document.body.dataset.ended") == "destroyed"
        )
        wait_anonymous(laptop)
        assert laptop.find_element(By.ID, "login-name").is_displayed()
        wait_rows(phone, 1)

        # Log in again on the laptop; "Log out other devices" on the phone.
        laptop.execute_script("delete document.body.dataset.ended")
        laptop.find_element(By.ID, "login-name").send_keys("Ada")
        click(laptop, "login-submit")
        wait_text(laptop, "user", "Ada")
        wait_rows(phone, 2)
        click(phone, "end-others")
        WebDriverWait(laptop, 10).until(
            lambda b: b.execute_script("return document.body.dataset.ended") == "destroyed"
        )
        wait_rows(phone, 1)
        wait_text(phone, "user", "Ada")
    finally:
        laptop.quit()
        phone.quit()


def test_without_the_socketio_client_the_page_says_so_and_http_works(tmp_path, chromium):
    # A copy without node_modules next to it points at the CDN, which the
    # closed network refuses: as a user offline, or behind a proxy, sees it.
    copy = tmp_path / "app"
    copy.mkdir()
    shutil.copy(ROOT / "example_app.py", copy / "example_app.py")
    server = serve(tmp_path, copy / "example_app.py")
    url = next(server)
    try:
        chromium.get(url)
        WebDriverWait(chromium, 20).until(
            lambda b: b.execute_script("return document.body.dataset.offline") == "1"
        )
        assert "could not load" in text(chromium, "status")
        chromium.find_element(By.ID, "login-name").send_keys("Ada")
        click(chromium, "login-submit")
        wait_text(chromium, "user", "Ada")
        click(chromium, "http-inc")
        wait_text(chromium, "http-count", "1")
        assert "could not load" in text(chromium, "status")
    finally:
        server.close()
