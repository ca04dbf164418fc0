"""A small Chrome DevTools Protocol client over chromium's ``--remote-debugging-pipe``.

Standard library only. Chromium reads commands from its file descriptor 3 and writes replies
and events to its descriptor 4; every message is one JSON object followed by a NUL byte.
Commands carry an ``id`` that the reply repeats; events carry a ``method`` and no ``id``.
Page-level commands and events also carry the ``sessionId`` of the page target we attach to
(``Target.attachToTarget`` with ``flatten=True``), so one pipe serves the browser and the page.

The client is single-threaded: whenever it waits (for a reply or an event) it reads and
dispatches everything chromium sent until then, so ``failed_requests`` and ``console_errors``
are kept up to date by every call, and reading them first collects what is already in the pipe.

    with Browser("/usr/bin/chromium") as browser:
        browser.goto("file:///tmp/site/index.html?q=abc")
        assert browser.eval("document.title") == "Home"
        browser.press("Tab")
        browser.press("Enter")
        assert not browser.failed_requests and not browser.console_errors
"""

from __future__ import annotations

import base64
import collections
import contextlib
import fcntl
import functools
import json
import os
import select
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--remote-debugging-pipe",
]
CHROMIUM_READS, CHROMIUM_WRITES = 3, 4  # chromium's ends of the two pipes, in the child

# Input.dispatchKeyEvent needs the DOM `key`, the physical `code` and the Windows virtual key
# code (which Blink's default actions, such as Tab moving focus, look at); keys that type a
# character also need `text` (Enter's "\r" is what activates a focused button).
NAMED_KEYS = {  # key: (code, windowsVirtualKeyCode, text)
    "Backspace": ("Backspace", 8, ""),
    "Tab": ("Tab", 9, ""),
    "Enter": ("Enter", 13, "\r"),
    "Escape": ("Escape", 27, ""),
    " ": ("Space", 32, " "),
    "PageUp": ("PageUp", 33, ""),
    "PageDown": ("PageDown", 34, ""),
    "End": ("End", 35, ""),
    "Home": ("Home", 36, ""),
    "ArrowLeft": ("ArrowLeft", 37, ""),
    "ArrowUp": ("ArrowUp", 38, ""),
    "ArrowRight": ("ArrowRight", 39, ""),
    "ArrowDown": ("ArrowDown", 40, ""),
    "Delete": ("Delete", 46, ""),
}
KEY_ALIASES = {"Space": " ", "Esc": "Escape", "Return": "Enter"}
MODIFIERS = {"Alt": 1, "Control": 2, "Ctrl": 2, "Meta": 4, "Shift": 8}

# Scrolls the element into view and returns its box in viewport (CSS pixel) coordinates, plus
# the scroll offset that turns them into document coordinates; null when nothing matches.
ELEMENT_BOX_JS = """(selector) => {
  const element = document.querySelector(selector);
  if (element === null) return null;
  element.scrollIntoView({block: "center", inline: "center", behavior: "instant"});
  const box = element.getBoundingClientRect();
  return {x: box.x, y: box.y, width: box.width, height: box.height,
          scrollX: window.scrollX, scrollY: window.scrollY};
}"""


class BrowserError(RuntimeError):
    """Chromium exited, could not navigate, or answered a command with an error."""


class JavaScriptError(BrowserError):
    """An expression passed to `Browser.eval` threw (or its promise rejected)."""


class Browser:
    """One headless chromium with one page, driven over the DevTools pipe.

    Every wait is bounded by `timeout` seconds. Use it as a context manager, or call `close`.
    """

    def __init__(self, chromium: str, width: int = 1200, height: int = 900, timeout: float = 60):
        self.timeout = timeout
        self._failed_requests: list[str] = []
        self._console_errors: list[str] = []
        self._request_urls: dict[str, str] = {}  # Network requestId -> URL, until it finishes
        self._events: collections.deque[dict] = collections.deque(maxlen=10_000)
        self._replies: dict[int, dict] = {}
        self._buffer = bytearray()
        self._last_id = 0
        self._session: str | None = None
        self._closed = False

        self._tmp = tempfile.TemporaryDirectory(prefix="cdp-", ignore_cleanup_errors=True)
        self._log_path = Path(self._tmp.name) / "chromium.log"
        self._process, self._reader, self._writer = self._launch(chromium)
        try:
            target = self._command("Target.createTarget", {"url": "about:blank"})
            attached = self._command(
                "Target.attachToTarget", {"targetId": target["targetId"], "flatten": True}
            )
            self._session = attached["sessionId"]
            for domain in ("Page", "Runtime", "Network", "Log"):
                self.send(f"{domain}.enable")
            self.set_viewport(width, height)
            # A screenshot beyond the viewport takes away the page's (classic, 15 px) scrollbar
            # for good, so later screenshots and layouts would differ from earlier ones; with
            # overlay scrollbars from the start, the layout width is the window width always.
            self.send("Emulation.setScrollbarsHidden", hidden=True)
        except BaseException:
            self.close()
            raise

    def _launch(self, chromium: str) -> tuple[subprocess.Popen, int, int]:
        """Start chromium with the read end of one pipe as its fd 3, the write end of another
        as its fd 4; return the process and our ends (reader, writer)."""
        to_chromium = os.pipe()
        from_chromium = os.pipe()
        child_ends = (to_chromium[0], from_chromium[1])

        def wire_pipes() -> None:  # runs in the child, between fork and exec
            # Copy both ends above fd 4 first, so that neither dup2 can overwrite the other.
            high = [fcntl.fcntl(fd, fcntl.F_DUPFD, CHROMIUM_WRITES + 1) for fd in child_ends]
            os.dup2(high[0], CHROMIUM_READS)
            os.dup2(high[1], CHROMIUM_WRITES)

        profile = Path(self._tmp.name) / "profile"
        try:
            with open(self._log_path, "wb") as log:
                # pass_fds keeps fds 3 and 4 open across exec (everything else is closed). It
                # needs them open in this process, and they are: the four descriptors just
                # opened took the lowest free numbers. In the child, wire_pipes (which runs
                # before the other descriptors are closed) points 3 and 4 at our pipes.
                process = subprocess.Popen(
                    [chromium, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=log,
                    pass_fds=(CHROMIUM_READS, CHROMIUM_WRITES),
                    preexec_fn=wire_pipes,
                    start_new_session=True,  # its own process group, killed as one if need be
                )
        except BaseException:
            for fd in (*to_chromium, *from_chromium):
                os.close(fd)
            self._tmp.cleanup()
            raise
        for fd in child_ends:
            os.close(fd)
        return process, from_chromium[0], to_chromium[1]

    # -- protocol ---------------------------------------------------------------------------

    def send(self, method: str, **params: Any) -> dict:
        """Send a command to the page and return its result (raises BrowserError on error)."""
        return self._command(method, params, self._session)

    def wait_for_event(self, method: str, timeout: float | None = None) -> dict:
        """Wait for the page's next `method` event (one already queued counts) and return its
        params. `goto` empties the queue, so events of earlier pages do not count."""
        return self._wait(lambda: self._take_event(method), f"the {method} event", timeout)

    def _take_event(self, method: str) -> dict | None:
        for event in self._events:
            if event["method"] == method and event.get("sessionId") == self._session:
                self._events.remove(event)
                return event.get("params", {})
        return None

    def _command(
        self,
        method: str,
        params: dict | None = None,
        session: str | None = None,
        timeout: float | None = None,
    ) -> dict:
        if self._closed:
            raise BrowserError(f"cannot send {method}: the browser is closed")
        self._last_id += 1
        message_id = self._last_id
        message = {"id": message_id, "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        data = json.dumps(message).encode() + b"\0"
        try:
            while data:
                data = data[os.write(self._writer, data) :]
        except BrokenPipeError:
            raise BrowserError(self._exited(f"sending {method}")) from None

        reply = self._wait(
            lambda: self._replies.pop(message_id, None), f"the reply to {method}", timeout
        )
        if "error" in reply:
            error = reply["error"]
            detail = f" ({error['data']})" if error.get("data") else ""
            raise BrowserError(f"{method} failed: {error.get('message')}{detail}")
        return reply.get("result", {})

    def _wait(self, found: Callable[[], T | None], what: str, timeout: float | None) -> T:
        """Read and dispatch chromium's messages until `found()` returns something."""
        timeout = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        while (result := found()) is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self._read(remaining, what):
                raise TimeoutError(f"chromium: timed out after {timeout:g} s waiting for {what}")
        return result

    def _read(self, timeout: float, what: str = "messages") -> bool:
        """Read one chunk from chromium (waiting at most `timeout` s) and dispatch the complete
        messages in it; False if nothing arrived in time."""
        ready, _, _ = select.select([self._reader], [], [], timeout)
        if not ready:
            return False
        chunk = os.read(self._reader, 1 << 20)
        if not chunk:
            raise BrowserError(self._exited(f"waiting for {what}"))
        self._buffer += chunk
        if b"\0" in chunk:
            *messages, rest = self._buffer.split(b"\0")
            self._buffer = bytearray(rest)
            for message in messages:
                self._dispatch(json.loads(message))
        return True

    def _drain(self) -> None:
        """Dispatch whatever chromium has already sent, without waiting."""
        while not self._closed and self._read(0):
            pass

    def _dispatch(self, message: dict) -> None:
        if "id" in message:
            self._replies[message["id"]] = message
            return
        if message.get("sessionId") == self._session:
            self._record(message["method"], message.get("params", {}))
        self._events.append(message)

    def _record(self, method: str, params: dict) -> None:
        """Note failed requests and console errors, whatever we happen to be waiting for."""
        if method == "Network.requestWillBeSent":  # also sent again, same id, on a redirect
            self._request_urls[params["requestId"]] = params["request"]["url"]
        elif method == "Network.responseReceived":
            if params["response"]["status"] >= 400:
                self._failed_requests.append(params["response"]["url"])
        elif method == "Network.loadingFinished":
            self._request_urls.pop(params["requestId"], None)
        elif method == "Network.loadingFailed":
            url = self._request_urls.pop(params["requestId"], "(unknown URL)")
            if not params.get("canceled"):  # e.g. a navigation aborting the last page's loads
                self._failed_requests.append(url)
        elif method == "Runtime.exceptionThrown":
            self._console_errors.append(_describe_exception(params["exceptionDetails"]))
        elif method == "Runtime.consoleAPICalled" and params["type"] in ("error", "assert"):
            args = " ".join(str(_value(arg, describe=True)) for arg in params.get("args", []))
            self._console_errors.append(f"console.{params['type']}: {args}")
        elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
            entry = params["entry"]
            where = f" ({entry['url']})" if entry.get("url") else ""
            self._console_errors.append(f"{entry['text']}{where}")

    def _exited(self, doing: str) -> str:
        """Describe chromium's exit, for an error raised while `doing` something."""
        try:
            code = self._process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            code = "still running"
        tail = self._log_path.read_bytes()[-2000:].decode(errors="replace").strip()
        return f"chromium closed the pipe ({doing}; exit code {code}); stderr ends:\n{tail}"

    # -- page -------------------------------------------------------------------------------

    @property
    def failed_requests(self) -> list[str]:
        """URLs that failed to load or answered HTTP >= 400 since the last `goto`."""
        self._drain()
        return self._failed_requests

    @property
    def console_errors(self) -> list[str]:
        """Uncaught exceptions, console.error/assert calls and error log entries (such as
        "Failed to load resource") since the last `goto`."""
        self._drain()
        return self._console_errors

    def goto(self, url: str | os.PathLike) -> None:
        """Navigate to `url` (a path is turned into a file:// URL) and wait for its load event;
        a change of fragment only (same-document navigation) does not wait."""
        if isinstance(url, os.PathLike):
            url = Path(url).resolve().as_uri()
        self._drain()  # what is still in the pipe belongs to the previous page
        self._failed_requests.clear()
        self._console_errors.clear()
        self._events.clear()
        result = self.send("Page.navigate", url=url)
        if result.get("errorText"):
            raise BrowserError(f"could not open {url}: {result['errorText']}")
        if "loaderId" in result:
            loaded = functools.partial(self._take_event, "Page.loadEventFired")
            self._wait(loaded, f"the load event of {url}", None)

    def eval(self, expression: str) -> Any:
        """Evaluate a JavaScript expression in the page (awaiting a promise) and return its
        value as JSON would carry it (NaN, Infinity, -0 and BigInts are converted too)."""
        result = self.send(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in result:
            message = _describe_exception(result["exceptionDetails"])
            raise JavaScriptError(f"{message}\n  while evaluating: {expression}")
        return _value(result["result"])

    def _element_box(self, selector: str) -> dict:
        box = self.eval(f"({ELEMENT_BOX_JS})({json.dumps(selector)})")
        if box is None:
            raise BrowserError(f"no element matches {selector!r}")
        if box["width"] == 0 and box["height"] == 0:
            raise BrowserError(f"the element {selector!r} is not rendered (empty box)")
        return box

    def click(self, selector: str) -> None:
        """Scroll the first element matching `selector` into view and click its centre with
        the (emulated) mouse, so that whatever is on top at that point gets the click."""
        box = self._element_box(selector)
        x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
        self.send("Input.dispatchMouseEvent", type="mouseMoved", x=x, y=y)
        for kind, buttons in (("mousePressed", 1), ("mouseReleased", 0)):
            self.send(
                "Input.dispatchMouseEvent",
                type=kind,
                x=x,
                y=y,
                button="left",
                buttons=buttons,
                clickCount=1,
            )

    def type_text(self, text: str) -> None:
        """Insert `text` into the focused element, as a paste or IME would: `input` events
        fire, key events do not (use `press` for those)."""
        self.send("Input.insertText", text=text)

    def press(self, key: str) -> None:
        """Press and release a key: a name such as "Tab", "Enter", "Escape", "ArrowDown",
        "Space" or a single character, optionally with modifiers ("Shift+Tab")."""
        *held, name = key.split("+") if len(key) > 1 else [key]
        event = _key_event(KEY_ALIASES.get(name, name))
        unknown = [modifier for modifier in held if modifier not in MODIFIERS]
        if unknown:
            raise ValueError(f"unknown modifier {unknown[0]!r}; known: {', '.join(MODIFIERS)}")
        event["modifiers"] = sum(MODIFIERS[modifier] for modifier in held)
        # "keyDown" with text also sends the character (keypress); "rawKeyDown" does not.
        text = event.pop("text")
        if text:
            self.send("Input.dispatchKeyEvent", type="keyDown", text=text, **event)
        else:
            self.send("Input.dispatchKeyEvent", type="rawKeyDown", **event)
        self.send("Input.dispatchKeyEvent", type="keyUp", **event)

    def set_viewport(self, width: int, height: int, mobile: bool = False) -> None:
        """Emulate a window of `width` x `height` CSS pixels (scale 1). With `mobile`, pages
        without <meta name=viewport content="width=device-width"> lay out 980 px wide."""
        self.send(
            "Emulation.setDeviceMetricsOverride",
            width=width,
            height=height,
            deviceScaleFactor=1,
            mobile=mobile,
        )

    def screenshot(self, path: str | os.PathLike, full_page: bool = False) -> None:
        """Save the viewport, or with `full_page` the whole document, as a PNG."""
        if full_page:
            size = self.send("Page.getLayoutMetrics")["cssContentSize"]
            self._capture(path, {"x": 0, "y": 0, "width": size["width"], "height": size["height"]})
        else:
            self._capture(path, None)

    def screenshot_element(self, selector: str, path: str | os.PathLike) -> None:
        """Save the first element matching `selector` (its border box) as a PNG."""
        box = self._element_box(selector)
        x, y = box["x"] + box["scrollX"], box["y"] + box["scrollY"]
        self._capture(path, {"x": x, "y": y, "width": box["width"], "height": box["height"]})

    def _capture(self, path: str | os.PathLike, clip: dict | None) -> None:
        params: dict[str, Any] = {"format": "png"}
        if clip is not None:  # clip is in document coordinates, and may extend past the window
            params.update(clip={**clip, "scale": 1}, captureBeyondViewport=True)
        data = self.send("Page.captureScreenshot", **params)["data"]
        Path(path).write_bytes(base64.b64decode(data))

    # -- shutting down ----------------------------------------------------------------------

    def close(self) -> None:
        """Ask chromium to quit, kill its process group if it does not, and clean up."""
        if self._closed:
            return
        with contextlib.suppress(BrowserError, TimeoutError):  # it may exit before answering
            self._command("Browser.close", timeout=5)
        self._closed = True
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self._process.pid, signal.SIGKILL)
            self._process.wait()
        os.close(self._reader)
        os.close(self._writer)
        self._tmp.cleanup()

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _value(remote: dict, describe: bool = False) -> Any:
    """The value of a Runtime.RemoteObject (or, with `describe`, its description)."""
    if "unserializableValue" in remote:  # NaN, Infinity, -Infinity, -0 or a BigInt like 12n
        text = remote["unserializableValue"]
        return int(text[:-1]) if text.endswith("n") else float(text)
    if describe and "value" not in remote:
        return remote.get("description", remote.get("type"))
    return remote.get("value")


def _key_event(key: str) -> dict:
    """The Input.dispatchKeyEvent fields (and text) for a key name or a single character."""
    if key in NAMED_KEYS:
        code, key_code, text = NAMED_KEYS[key]
    elif len(key) == 1 and key.isascii() and key.isalnum():
        code = f"Digit{key}" if key.isdigit() else f"Key{key.upper()}"
        key_code, text = ord(key.upper()), key
    elif len(key) == 1:  # any other character just types itself
        code, key_code, text = "", 0, key
    else:
        raise ValueError(f"unknown key {key!r}; known: {', '.join(NAMED_KEYS)} or one character")
    return {"key": key, "code": code, "windowsVirtualKeyCode": key_code, "text": text}


def _describe_exception(details: dict) -> str:
    """One line for a Runtime.ExceptionDetails: "Uncaught Error: boom (file:///x.html:3:9)"."""
    message = ""
    if "exception" in details:  # the thrown value
        exception = details["exception"]
        message = exception.get("description") or str(_value(exception, describe=True))
    first_line = message.splitlines()[0] if message else ""
    text = details.get("text", "Uncaught")
    if first_line not in text:  # for a rejected promise, text already holds the message
        text = f"{text} {first_line}"
    where = ""
    if details.get("url"):
        line, column = details.get("lineNumber", 0) + 1, details.get("columnNumber", 0) + 1
        where = f" ({details['url']}:{line}:{column})"
    return text + where
