"""The DevTools pipe client (tests/cdp.py), on small pages written to tmp_path."""

import os
import shutil
import signal
import struct

import pytest
from cdp import Browser, BrowserError, JavaScriptError

pytestmark = [pytest.mark.browser]

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
NO_CHROMIUM = "chromium is not installed (make test installs Debian's chromium as root)"
WIDTH, HEIGHT = 1200, 900


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None:
        pytest.skip(NO_CHROMIUM)
    with Browser(CHROMIUM, width=WIDTH, height=HEIGHT, timeout=30) as browser:
        yield browser


@pytest.fixture
def page(tmp_path):
    """Write an HTML page (body markup, optional <head> markup) and return its file:// URL."""

    def write(body: str, head: str = "", name: str = "index.html") -> str:
        path = tmp_path / name
        path.write_text(f"<!doctype html><html><head>{head}</head><body>{body}</body></html>")
        return path.as_uri()

    return write


def png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_goto_and_eval(browser, page):
    browser.goto(page("<p>hi</p>", head="<title>Hello</title>"))
    assert browser.eval("document.title") == "Hello"
    assert browser.eval("Promise.resolve(6 * 7)") == 42
    assert browser.eval("({list: [1, 'two'], none: null})") == {"list": [1, "two"], "none": None}
    assert browser.eval("undefined") is None
    assert browser.eval("2n ** 70n") == 2**70


def test_query_string_and_fragment(browser, page):
    url = page("<p id=part>part</p>")
    browser.goto(f"{url}?q=abc#part")
    assert browser.eval("[location.search, location.hash]") == ["?q=abc", "#part"]
    browser.eval("window.marker = 1")
    browser.goto(f"{url}?q=abc#other")  # same document: no load event to wait for
    assert browser.eval("[location.hash, window.marker]") == ["#other", 1]


def test_goto_a_missing_file_raises(browser, tmp_path):
    with pytest.raises(BrowserError, match="ERR_FILE_NOT_FOUND"):
        browser.goto(tmp_path / "nothing-here.html")


def test_typing_fires_input_events(browser, page):
    browser.goto(
        page(
            "<input id=name><output id=out></output><script>"
            "let count = 0;"
            "document.getElementById('name').addEventListener('input', event => {"
            "  document.getElementById('out').textContent = `${++count}:${event.target.value}`;"
            "});</script>"
        )
    )
    browser.click("#name")
    browser.type_text("hello")
    assert browser.eval("document.getElementById('out').textContent").endswith(":hello")
    assert browser.eval("document.getElementById('name').value") == "hello"


def test_tab_moves_focus_and_enter_activates(browser, page):
    browser.goto(
        page(
            "<button id=first>first</button>"
            "<button id=second onclick=\"document.body.dataset.done = 'second'\">second</button>"
        )
    )
    browser.press("Tab")
    assert browser.eval("document.activeElement.id") == "first"
    browser.press("Tab")
    assert browser.eval("document.activeElement.id") == "second"
    browser.press("Enter")
    assert browser.eval("document.body.dataset.done") == "second"
    browser.press("Shift+Tab")
    assert browser.eval("document.activeElement.id") == "first"


def test_click_scrolls_to_the_button(browser, page):
    browser.goto(
        page(
            "<div style='height: 3000px'></div>"
            "<button id=go onclick=\"this.textContent = 'clicked'\">go</button>"
        )
    )
    browser.click("#go")
    assert browser.eval("document.getElementById('go').textContent") == "clicked"
    assert browser.eval("window.scrollY") > 0
    with pytest.raises(BrowserError, match="no element matches"):
        browser.click("#absent")


def test_missing_image_is_a_failed_request(browser, page):
    browser.goto(page("<img src='missing.png' alt='gone'>"))
    assert [url.rsplit("/", 1)[-1] for url in browser.failed_requests] == ["missing.png"]
    browser.goto(page("<p>fine</p>", name="fine.html"))
    assert browser.failed_requests == []  # reset by goto


def test_script_errors_are_console_errors(browser, page):
    browser.goto(page("<script>console.error('bad', 7); throw new Error('boom');</script>"))
    errors = browser.console_errors
    assert "console.error: bad 7" in errors
    assert any(error.startswith("Uncaught Error: boom (file://") for error in errors), errors
    browser.goto(page("<p>fine</p>", name="fine.html"))
    assert browser.console_errors == []


def test_mobile_viewport(browser, page):
    browser.goto(page("<p>narrow</p>", head="<meta name=viewport content='width=device-width'>"))
    assert browser.eval("window.innerWidth") == WIDTH
    try:
        browser.set_viewport(375, 700, mobile=True)
        assert browser.eval("[window.innerWidth, window.innerHeight]") == [375, 700]
    finally:
        browser.set_viewport(WIDTH, HEIGHT)


def test_screenshots(browser, page, tmp_path):
    browser.goto(
        page(
            "<div style='height: 1500px; background: linear-gradient(#fff, #36c)'></div>"
            "<div id=box style='width: 120px; height: 80px; background: red'></div>",
            head="<style>body { margin: 0 }</style>",
        )
    )
    browser.screenshot(tmp_path / "view.png")
    assert png_size(tmp_path / "view.png") == (WIDTH, HEIGHT)
    assert (tmp_path / "view.png").stat().st_size > 1000
    browser.screenshot(tmp_path / "full.png", full_page=True)
    assert png_size(tmp_path / "full.png") == (WIDTH, 1580)
    assert browser.eval("[window.innerWidth, window.innerHeight]") == [WIDTH, HEIGHT]
    browser.screenshot_element("#box", tmp_path / "box.png")
    assert png_size(tmp_path / "box.png") == (120, 80)


def test_eval_of_a_throwing_expression_raises(browser):
    with pytest.raises(JavaScriptError, match="ReferenceError: nope is not defined"):
        browser.eval("nope()")
    with pytest.raises(JavaScriptError, match="Uncaught \\(in promise\\) Error: later"):
        browser.eval("Promise.reject(new Error('later'))")


def test_waits_time_out_with_what_was_awaited(browser):
    with pytest.raises(TimeoutError, match="waiting for the Page.neverSent event"):
        browser.wait_for_event("Page.neverSent", timeout=0.2)


def test_close_ends_chromium_and_closes_the_pipe():
    if CHROMIUM is None:
        pytest.skip(NO_CHROMIUM)
    browser = Browser(CHROMIUM)
    reader = browser._reader
    browser.close()
    assert browser._process.returncode is not None  # reaped: no zombie of ours
    with pytest.raises(OSError):
        os.fstat(reader)
    with pytest.raises(BrowserError, match="closed"):
        browser.eval("1")
    browser.close()  # a second close is harmless


def test_a_dead_chromium_is_reported_with_its_exit_code():
    if CHROMIUM is None:
        pytest.skip(NO_CHROMIUM)
    with Browser(CHROMIUM) as browser:
        os.killpg(browser._process.pid, signal.SIGKILL)
        with pytest.raises(BrowserError, match=r"closed the pipe .* exit code -9\); stderr ends"):
            browser.eval("1")
