"""Open the smoke gallery in headless Chromium: every link and image resolves, offline."""

import shutil
import subprocess
import tempfile
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlparse

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.browser]

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# Debian's headless chromium on a machine with no network (no background fetches).
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--virtual-time-budget=5000",
]
EXTERNAL_OK = {"arxiv.org"}  # paper links; everything else must be local


class Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.links = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        for key in ("href", "src"):
            if attrs.get(key) and tag in ("a", "img", "script", "link"):
                self.links.append((tag, attrs[key]))


def render(page: Path, *extra: str) -> str:
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (make test installs Debian's chromium as root)")
    with tempfile.TemporaryDirectory() as profile:
        out = subprocess.run(
            [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *extra, page.as_uri()],
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


def check_links(page: Path, dom: str) -> int:
    parser = Links()
    parser.feed(dom)
    for tag, link in parser.links:
        url = urlparse(link)
        if url.scheme in ("http", "https"):
            assert url.hostname in EXTERNAL_OK, f"{page.name}: network link {link}"
        elif url.scheme in ("", "file") and url.path:
            target = (page.parent / url.path).resolve()
            assert target.exists(), f"{page.name}: <{tag}> {link} does not resolve"
    return len(parser.links)


def test_gallery_pages_render_and_every_link_resolves(smoke_project):
    gallery = smoke_project / "figures/smoke"
    dom = render(gallery / "index.html", "--dump-dom")
    cards = dom.count('<article class="card"')
    assert cards >= 3
    assert f"{cards} of {cards} shown" in dom, "the filter script did not run"
    assert check_links(gallery / "index.html", dom) > 5 * cards
    check_links(gallery / "coverage.html", render(gallery / "coverage.html", "--dump-dom"))
    for page in sorted((gallery / "claims").glob("*.html")):
        dom = render(page, "--dump-dom")
        check_links(page, dom)
        assert "MathJax" in dom


def test_gallery_screenshot_is_not_blank(smoke_project, tmp_path):
    shot = tmp_path / "index.png"
    render(
        smoke_project / "figures/smoke/index.html", f"--screenshot={shot}", "--window-size=1200,900"
    )
    assert shot.stat().st_size > 20_000
