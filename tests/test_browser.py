"""The built book in a real browser (headless Chromium): clean pages, loaded figures, a working search.

The unit tests build a tiny fake site and prove that the checker flags each kind of problem; the
``book`` tests run it over ``book/_build/html``. Both need Debian's ``chromium`` and ``chromium-driver``
(CI's .ci/run installs them) and fail with the install command when they are missing.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import pytest
from browser_check import (
    BrowserMissingError,
    browser,
    browser_paths,
    check_pages,
    html_pages,
    is_harmless,
    search_finds,
    search_results,
    serve,
)
from selenium.webdriver.remote.webdriver import WebDriver

ROOT = Path(__file__).resolve().parents[1]
HTML = ROOT / "book" / "_build" / "html"
#: Each chapter the search must find, by a word of its prose.
SEARCHES = [
    ("hydrated", "notebooks/09_ann_boosting.html"),
    ("node2vec", "notebooks/03_graph_embeddings.html"),
]
#: A 1x1 PNG.
PIXEL = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kg"
                         "AAAABJRU5ErkJggg==")


@pytest.fixture(scope="module")
def driver() -> Iterator[WebDriver]:
    missing = ""
    try:
        browser_paths()
    except BrowserMissingError as err:
        missing = str(err)
    if missing:  # fail (not skip): CI installs the browser, so a missing one is a broken set-up
        pytest.fail(missing, pytrace=False)
    with browser() as d:
        yield d


def _page(body: str, head: str = "") -> str:
    return f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>t</title>{head}</head><body>{body}</body></html>"


@pytest.fixture(scope="module")
def fake_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    site = tmp_path_factory.mktemp("site")
    (site / "pixel.png").write_bytes(PIXEL)
    pages = {
        # clean, and showing MyST's glue syntax in code on purpose, as the API reference does
        "good.html": _page("<p>All fine.</p><img src='pixel.png' alt='a pixel'>"
                           "<p>Quote a figure with <code>{glue:text}`key:.2f`</code>.</p>"),
        "broken_image.html": _page("<p>A figure:</p><img src='missing.png' alt='gone'>"),
        "glue.html": _page("<p>Recall is {glue:text}`x` here.</p>"),
        "script_error.html": _page("<p>Text.</p>", head="<script>throw new Error('boom')</script>"),
        # an error output, in a collapsed (hidden) cell output as a notebook would render it
        "traceback.html": _page("<div style='display:none'><pre>Traceback (most recent call last):\n"
                                '  File "chapter.py", line 1, in &lt;module&gt;\nValueError: bad</pre></div>'),
        # a page in a sub-folder is checked; _static and _sources are not pages
        "sub/nested.html": _page("<p>Nested.</p><img src='../pixel.png' alt='a pixel'>"),
        "_static/widget.html": _page("<img src='missing.png'>"),
        "_sources/page.html": _page("<p>{glue:text}`y`</p>"),
        # a stand-in for Sphinx's search page: results appear a moment after load, then the summary
        "search.html": _page("<div id='search-results'></div>", head="""<script>
            window.addEventListener("load", () => setTimeout(() => {
              const q = new URLSearchParams(location.search).get("q");
              const out = document.getElementById("search-results");
              const list = out.appendChild(document.createElement("ul"));
              list.className = "search";
              if (q === "hydrated") list.innerHTML = "<li><a href='chapters/09.html?highlight=hydrated#sec'>9</a></li>";
              const summary = out.appendChild(document.createElement("p"));
              summary.className = "search-summary";
              summary.textContent = "Search finished, found " + list.children.length + " page(s).";
            }, 300));</script>"""),
    }
    for name, html in pages.items():
        (site / name).parent.mkdir(parents=True, exist_ok=True)
        (site / name).write_text(html)
    return site


@pytest.fixture(scope="module")
def fake_problems(driver: WebDriver, fake_site: Path) -> list[str]:
    with serve(fake_site) as base_url:
        return check_pages(driver, fake_site, base_url)


def _of(problems: list[str], page: str) -> list[str]:
    return [p for p in problems if p.startswith(f"{page}: ")]


def test_html_pages_lists_every_page_but_assets_and_sources(fake_site):
    assert [p.as_posix() for p in html_pages(fake_site)] == [
        "broken_image.html", "glue.html", "good.html", "script_error.html", "search.html", "sub/nested.html",
        "traceback.html"]


def test_checker_passes_a_clean_page(fake_problems):
    assert _of(fake_problems, "good.html") == []
    assert _of(fake_problems, "sub/nested.html") == []


def test_checker_flags_an_image_that_does_not_load(fake_problems):
    image, console = _of(fake_problems, "broken_image.html")
    assert image == "broken_image.html: image did not load: missing.png"
    assert "console error" in console and "missing.png" in console and "404" in console  # the browser says so too


def test_checker_flags_unresolved_glue_text(fake_problems):
    (problem,) = _of(fake_problems, "glue.html")
    assert "unresolved glue text" in problem and "{glue:text}`x`" in problem


def test_checker_flags_a_javascript_error(fake_problems):
    (problem,) = _of(fake_problems, "script_error.html")
    assert "console error" in problem and "Uncaught Error: boom" in problem


def test_checker_flags_a_python_traceback_even_in_a_hidden_output(fake_problems):
    (problem,) = _of(fake_problems, "traceback.html")
    assert "Python traceback" in problem and "ValueError: bad" in problem


def test_checker_flags_nothing_else(fake_problems):
    flagged = {p.split(": ", 1)[0] for p in fake_problems}
    assert flagged == {"broken_image.html", "glue.html", "script_error.html", "traceback.html"}


def test_checker_refuses_an_empty_build(driver, tmp_path):
    with serve(tmp_path) as base_url, pytest.raises(ValueError, match="no HTML pages"):
        check_pages(driver, tmp_path, base_url)


def test_search_check_waits_for_results_and_matches_the_page(driver, fake_site):
    with serve(fake_site) as base_url:
        assert search_results(driver, base_url, "hydrated") == ["chapters/09.html"]
        assert search_finds(driver, base_url, "hydrated", "chapters/09.html")
        assert not search_finds(driver, base_url, "hydrated", "chapters/08.html")
        assert not search_finds(driver, base_url, "absent", "chapters/09.html")


def test_only_the_known_harmless_console_errors_are_ignored():
    harmless = [
        "http://127.0.0.1:4242/notebooks/01_marketplace.html 61:12 Uncaught SyntaxError: "
        "Identifier 'THEBE_JS_URL' has already been declared",
        'http://127.0.0.1:4242/_static/scripts/pydata-sphinx-theme.js?digest=55c2 0:1488 '
        '"Got invalid theme mode: . Resetting to auto."',
        "http://127.0.0.1:4242/favicon.ico - Failed to load resource: "
        "the server responded with a status of 404 (File not found)",
    ]
    harmful = [
        "http://127.0.0.1:4242/notebooks/01_marketplace.html 61:12 Uncaught SyntaxError: "
        "Identifier 'results' has already been declared",
        "http://127.0.0.1:4242/_images/figure.png - Failed to load resource: "
        "the server responded with a status of 404 (File not found)",
        "http://127.0.0.1:4242/search.html 3:9 Uncaught Error: boom",
    ]
    assert all(is_harmless({"level": "SEVERE", "message": m}) for m in harmless)
    assert not any(is_harmless({"level": "SEVERE", "message": m}) for m in harmful)


@pytest.fixture(scope="module")
def book_url(built_book) -> Iterator[str]:
    with serve(HTML) as base_url:
        yield base_url


@pytest.mark.book
def test_every_page_of_the_built_book_is_clean_in_a_browser(driver, book_url):
    problems = check_pages(driver, HTML, book_url)
    assert not problems, f"{len(problems)} problem(s) in {len(html_pages(HTML))} pages:\n" + "\n".join(problems)


@pytest.mark.book
@pytest.mark.parametrize(("word", "page"), SEARCHES)
def test_the_book_search_finds_a_chapter_by_a_word_from_it(driver, book_url, word, page):
    found = search_results(driver, book_url, word)
    assert page in found, f"searching the book for {word!r} did not list {page}; it listed {sorted(set(found))}"


@pytest.mark.book
def test_the_explorer_shows_its_static_example_in_the_built_book(driver, book_url):
    # no kernel runs behind the HTML book: chapter 10's explorer must show its static rendering
    # (one request through the four systems), not an empty widget
    driver.get(f"{book_url}/notebooks/10_whole_system.html")
    explorers = driver.find_elements("css selector", "div.retrieval-explorer")
    assert len(explorers) == 1, "chapter 10 shows no static explorer example"
    text = explorers[0].text
    assert all(name in text for name in ("BM25", "unified, no history", "served")), text[:500]
    assert explorers[0].is_displayed()
    assert not driver.find_elements("css selector", 'script[type="application/vnd.jupyter.widget-view+json"]')
