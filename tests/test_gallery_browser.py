"""The smoke gallery in headless Chromium, used as a reader would.

One browser visits every page (tests/cdp.py drives it over the DevTools protocol): the index's
search, filters, sort and URL state, keyboard use and a phone-sized window; every claim page,
its verdict figure and folded code; every link and image resolves locally. Screenshots of the
index, the forest plot and a claim page are saved under results/screenshots/<scale>/.

    python tests/test_gallery_browser.py figures results/screenshots/quick   # any built gallery
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from browsing import CHROMIUM, LINKS_JS, page_problems  # noqa: E402
from cdp import Browser  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.browser]

ROOT = Path(__file__).resolve().parents[1]

# Where the claim page's parts sit (top edge, page pixels) and what its result section holds.
CLAIM_PAGE_LAYOUT_JS = """(() => {
  const top = s => {
    const e = document.querySelector(s);
    return e ? e.getBoundingClientRect().top + scrollY : null;
  };
  const count = s => document.querySelectorAll(s).length;
  return {
    verdict: top('#verdict'), figure: top('#verdict-figure svg'), table: top('#checks table'),
    notebook: top('#notebook'), rows: count('#checks tr[id^=check-]'),
    figureRows: count('#verdict-figure svg a'),
    folded: count('details.replica-code:not([open])'), open: count('details.replica-code[open]'),
    sources: Array.from(document.querySelectorAll('.links a')).map(a => a.textContent),
    mathjax: typeof MathJax !== 'undefined'};
})()"""
VISIBLE_JS = """
Array.from(document.querySelectorAll('%s')).filter(e => e.offsetParent !== null)
  .map(e => e.dataset.slug)
"""


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (make test installs Debian's chromium as root)")
    with Browser(CHROMIUM, width=1280, height=900) as session:
        yield session


@pytest.fixture(scope="module")
def gallery(smoke_project) -> Path:
    return smoke_project / "figures/smoke"


def visible(browser: Browser, selector: str) -> list[str]:
    return browser.eval(VISIBLE_JS % selector)


def set_select(browser: Browser, element_id: str, value: str) -> None:
    browser.eval(
        f"(s => {{ s.value = {value!r}; s.dispatchEvent(new Event('change')); }})"
        f"(document.getElementById({element_id!r}))"
    )


def check_claim_page_layout(browser: Browser, page: Path) -> list[str]:
    """The result first (verdict, figure, table, then the notebook), code folded, sources."""
    layout = browser.eval(CLAIM_PAGE_LAYOUT_JS)
    tops = [layout[k] for k in ("verdict", "figure", "table", "notebook")]
    problems = []
    if None in tops or tops != sorted(tops):
        problems.append(f"verdict, figure, table and notebook out of order: {tops}")
    if not layout["rows"] == layout["figureRows"] > 0:
        problems.append(f"{layout['figureRows']} figure rows for {layout['rows']} table rows")
    if not (layout["folded"] > 0 and layout["open"] == 0):
        problems.append("code cells not folded")
    if not {"manifest", "module", "notebook source"} <= set(layout["sources"]):
        problems.append(f"sources missing: {layout['sources']}")
    if not layout["mathjax"]:
        problems.append("MathJax did not load")
    return [f"{page.name}: {p}" for p in problems]


def test_every_page_renders_and_claim_pages_lead_with_the_result(browser, gallery):
    """One visit per page: links, images and scripts; a claim page's layout as well."""
    pages = [gallery / "index.html", gallery / "coverage.html"]
    claim_pages = sorted((gallery / "claims").glob("*.html"))
    assert claim_pages
    problems = []
    for page in pages + claim_pages:
        browser.goto(page)
        problems += page_problems(browser, page)
        if page in claim_pages:
            problems += check_claim_page_layout(browser, page)
    assert not problems, "\n".join(problems)
    browser.goto(gallery / "index.html")
    assert len(browser.eval(LINKS_JS)) > 8 * len(claim_pages)


def test_claim_page_code_unfolds_and_a_permalink_lands_on_its_check(browser, gallery):
    page = sorted((gallery / "claims").glob("*.html"))[0]
    browser.goto(page)
    browser.click("details.replica-code > summary")
    assert browser.eval("document.querySelector('details.replica-code').open")
    anchor = browser.eval("document.querySelector('#checks tr[id^=check-]').id")
    browser.goto(f"{page.as_uri()}#{anchor}")
    assert browser.eval("document.querySelector(':target') && document.querySelector(':target').id")


def test_index_search_filter_sort_and_url_state(browser, gallery):
    index = gallery / "index.html"
    browser.goto(index)
    cards = visible(browser, ".card")
    assert len(cards) >= 3 and visible(browser, ".forest-row") == cards
    assert browser.eval("document.getElementById('shown').textContent") == (
        f"{len(cards)} of {len(cards)} shown"
    )
    # Search: an arXiv id finds its paper's cards and forest rows (one paper may have more
    # than one claim), and lands in the URL.
    target = cards[-1]
    arxiv_of = "(s => document.querySelector('#' + s + ' a[href*=arxiv]').textContent)"
    same_paper = browser.eval(
        f"(() => {{ const a = {arxiv_of}({target!r}); return {json.dumps(cards)}"
        f".filter(s => {arxiv_of}(s) === a); }})()"
    )
    browser.click("#q")
    browser.type_text(browser.eval(f"{arxiv_of}({target!r})").removeprefix("arXiv:"))
    assert visible(browser, ".card") == same_paper == visible(browser, ".forest-row")
    assert target in same_paper
    assert "q=" in browser.eval("location.search")
    # A status count filters; pressed again it clears.
    status = browser.eval(f"document.getElementById({target!r}).dataset.status")
    browser.goto(index)
    browser.click(f".status-count[data-status='{status}']")
    shown = visible(browser, ".card")
    assert target in shown and all(
        browser.eval(f"document.getElementById({s!r}).dataset.status") == status for s in shown
    )
    assert browser.eval("location.search") == f"?status={status}"
    browser.click(f".status-count[data-status='{status}']")
    assert visible(browser, ".card") == cards
    # Sort by runtime: slowest first, cards and forest rows alike.
    set_select(browser, "sort", "runtime")
    runtimes = browser.eval(
        "Array.from(document.querySelectorAll('.card')).map(c => parseFloat(c.dataset.runtime))"
    )
    assert runtimes == sorted(runtimes, reverse=True)
    assert visible(browser, ".forest-row") == visible(browser, ".card")
    # The URL round trip: a theme, a status and the sort, opened again from the URL alone.
    theme = browser.eval(f"document.getElementById({target!r}).dataset.theme")
    set_select(browser, "filter-theme", theme)
    set_select(browser, "filter-status", status)
    view, query = visible(browser, ".card"), browser.eval("location.search")
    assert "theme=" in query and "status=" in query and "sort=runtime" in query
    browser.goto(f"{index.as_uri()}{query}")
    assert visible(browser, ".card") == view and target in view
    assert browser.eval("document.getElementById('filter-theme').value") == theme
    assert browser.eval("document.getElementById('sort').value") == "runtime"


def test_index_copy_command_button(browser, gallery):
    browser.send(
        "Browser.grantPermissions", permissions=["clipboardReadWrite", "clipboardSanitizedWrite"]
    )
    browser.goto(gallery / "index.html")
    slug = visible(browser, ".card")[0]
    browser.click(f"#{slug} button.copy")
    # The clipboard answers asynchronously; the button then says it copied, and it did.
    copied = browser.eval(
        f"new Promise(done => setTimeout(() => done(document.querySelector('#{slug} button.copy')"
        ".dataset.copied), 300))"
    )
    assert copied == "yes"
    assert browser.eval("navigator.clipboard.readText()") == (
        f"snakemake --cores all --config scale=smoke claims='[{slug}]'"
    )


def test_index_sorts_and_theme_headings(browser, gallery):
    browser.goto(gallery / "index.html")
    headings = "Array.from(document.querySelectorAll('.forest-theme:not(.hidden)')).length"
    assert browser.eval(headings) > 0  # grouped by theme by default

    def column(key, missing=math.inf):  # the cards' data attribute, in page order
        texts = browser.eval(
            f"Array.from(document.querySelectorAll('.card')).map(c => c.dataset.{key})"
        )
        return [float(t) if t else missing for t in texts]

    set_select(browser, "sort", "status")
    assert column("statusRank") == sorted(column("statusRank"))
    set_select(browser, "sort", "year")
    assert column("year") == sorted(column("year"), reverse=True)
    set_select(browser, "sort", "margin")  # nearest the gate first; no primary check last
    margins = [abs(m) for m in column("margin")]
    assert margins == sorted(margins)
    set_select(browser, "sort", "robustness")  # least robust first; none last
    assert column("robustness") == sorted(column("robustness"))
    set_select(browser, "sort", "slug")
    slugs = visible(browser, ".card")
    assert slugs == sorted(slugs)
    assert browser.eval(headings) == 0  # headings only when grouped by theme
    assert visible(browser, ".forest-row") == visible(browser, ".card")


def test_index_search_by_author_and_link_to_a_card(browser, gallery):
    index = gallery / "index.html"
    browser.goto(index)
    slug = visible(browser, ".card")[-1]
    author = browser.eval(f"document.querySelector('#{slug} .meta').textContent.split(',')[0]")
    browser.click("#q")
    browser.type_text(author.strip().upper())  # case does not matter
    assert slug in visible(browser, ".card")
    # A card's own link: the fragment survives the page writing its state into the URL.
    browser.goto(f"{index.as_uri()}?sort=year#{slug}")
    assert browser.eval("location.hash") == f"#{slug}"
    assert browser.eval("location.search") == "?sort=year"
    assert browser.eval(f"document.getElementById({slug!r}).getBoundingClientRect().top") < 900


def test_index_works_from_the_keyboard_and_on_a_phone(browser, gallery):
    browser.goto(gallery / "index.html")
    for _ in range(40):  # Tab from the top of the page to the search box
        browser.press("Tab")
        if browser.eval("document.activeElement.id") == "q":
            break
    else:
        pytest.fail("the search box cannot be reached with Tab")
    slug = visible(browser, ".card")[0]
    browser.type_text(slug)
    assert slug in visible(browser, ".card")
    for _ in range(20):  # back into the verdict counts; Enter presses one
        browser.press("Shift+Tab")
        if browser.eval("document.activeElement.className") == "status-count":
            break
    else:
        pytest.fail("the verdict counts cannot be reached with Shift+Tab")
    browser.press("Enter")
    assert browser.eval("document.activeElement.getAttribute('aria-pressed')") == "true"
    try:
        for width, mobile in ((375, True), (820, False)):  # a phone, a tablet
            browser.set_viewport(width, 800, mobile=mobile)
            browser.goto(gallery / "index.html")
            overflow = browser.eval("document.documentElement.scrollWidth - window.innerWidth")
            assert overflow <= 1, f"the index is {overflow} px wider than a {width} px window"
            assert browser.eval("document.querySelector('.forest-strip').offsetParent !== null")
    finally:
        browser.set_viewport(1280, 900)


def test_coverage_page_search_sort_and_progress(browser, gallery):
    coverage = gallery / "coverage.html"
    browser.goto(coverage)
    rows = browser.eval("document.querySelectorAll('table.list tbody tr').length")
    bars = browser.eval("document.querySelectorAll('.progress-row').length")
    assert rows > 10 and bars > 4
    browser.click("th[data-key='tier'] button")
    tiers = browser.eval(
        "Array.from(document.querySelectorAll('tbody tr td:nth-child(4)')).map(t => t.textContent)"
    )
    assert tiers == sorted(tiers)
    browser.click("#q")
    browser.type_text("zzz-no-such-paper")
    assert browser.eval("document.getElementById('shown').textContent").startswith("0 of")
    query = browser.eval("location.search")
    assert "sort=tier" in query and "q=" in query
    browser.goto(f"{coverage.as_uri()}{query}")
    assert browser.eval("document.getElementById('shown').textContent").startswith("0 of")


def save_screenshots(browser: Browser, gallery: Path, out: Path) -> list[Path]:
    """The index above the fold, the whole forest plot, one claim page and the phone index."""
    out.mkdir(parents=True, exist_ok=True)
    shots = [out / n for n in ("index.png", "forest.png", "claim_page.png", "index_phone.png")]
    browser.set_viewport(1280, 900)
    browser.goto(gallery / "index.html")
    browser.screenshot(shots[0])
    browser.screenshot_element("#forest", shots[1])
    first = browser.eval("document.querySelector('.card').dataset.slug")
    browser.goto(gallery / "claims" / f"{first}.html")
    browser.screenshot(shots[2])
    try:
        browser.set_viewport(375, 800, mobile=True)
        browser.goto(gallery / "index.html")
        browser.screenshot(shots[3])
    finally:
        browser.set_viewport(1280, 900)
    return shots


def test_screenshots_are_saved_and_not_blank(browser, gallery):
    shots = save_screenshots(browser, gallery, ROOT / "results" / "screenshots" / "smoke")
    for shot in shots:
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert shot.stat().st_size > 20_000, shot


if __name__ == "__main__":
    built, target = Path(sys.argv[1]), Path(sys.argv[2])
    with Browser(CHROMIUM, width=1280, height=900) as session:
        for path in save_screenshots(session, built, target):
            print(path)
