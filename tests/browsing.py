"""What the browser tests check on every gallery page (the gallery and workflow tests)."""

from __future__ import annotations

import shutil
from pathlib import Path
from urllib.parse import unquote, urlparse

from cdp import Browser

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
EXTERNAL_OK = {"arxiv.org"}  # paper links; everything else must be local
# MathJax probes web-font loading with a font at about:blank, which Chromium refuses on file://.
PROBES = ("about:blank",)

# Every link and embedded resource of the page, with what kind of element it came from.
LINKS_JS = """
Array.from(document.querySelectorAll('a[href], img[src], script[src], link[href]'))
  .map(e => [e.tagName.toLowerCase(), e.getAttribute('href') || e.getAttribute('src')])
"""
BROKEN_IMAGES_JS = """
Array.from(document.images).filter(i => !i.complete || i.naturalWidth === 0).map(i => i.src)
"""
# Links to an anchor of the same page (permalinks, the verdict figure's rows) without a target.
MISSING_ANCHORS_JS = """
Array.from(document.querySelectorAll('a[href^="#"]')).map(a => a.getAttribute('href').slice(1))
  .filter(id => id && !document.getElementById(decodeURIComponent(id)))
"""


def page_problems(browser: Browser, page: Path) -> list[str]:
    """What is wrong with the page now shown: failed loads, script errors, broken images,
    network links, links to local files that do not exist."""
    problems = [f"failed to load {u}" for u in browser.failed_requests if u not in PROBES]
    problems += [
        f"console: {text}"
        for text in browser.console_errors
        if not any(probe in text for probe in PROBES)
    ]
    problems += [f"broken image {src}" for src in browser.eval(BROKEN_IMAGES_JS)]
    problems += [f"no anchor #{name}" for name in browser.eval(MISSING_ANCHORS_JS)]
    for tag, link in browser.eval(LINKS_JS):
        url = urlparse(link)
        local = url.scheme in ("", "file") and url.path
        if url.scheme in ("http", "https") and url.hostname not in EXTERNAL_OK:
            problems.append(f"<{tag}> {link} leaves the machine")
        elif local and not (page.parent / unquote(url.path)).resolve().exists():
            problems.append(f"<{tag}> {link} does not resolve")
    return [f"{page.name}: {p}" for p in problems]
