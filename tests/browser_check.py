"""Open a built HTML book in a real headless browser and report what a reader would find broken.

The browser is Debian's ``chromium`` driven through ``selenium`` by Debian's ``chromium-driver``
(``/usr/bin/chromedriver``). Nothing here downloads a browser or a driver: the driver's path is given
to selenium explicitly, which skips Selenium Manager, and ``SE_OFFLINE`` keeps it offline regardless.

The pages are served by a ``http.server`` on a loopback port (in a thread) rather than opened as
``file://`` URLs: Sphinx's search page fetches each hit's page to show a summary, and browsers refuse
``fetch`` on ``file://``, which would turn every search into console errors.

Typical use::

    with serve(html_dir) as base_url, browser() as driver:
        problems = check_pages(driver, html_dir, base_url)
        found = search_finds(driver, base_url, "hydrated", "notebooks/09_ann_boosting.html")
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote, urljoin, urlparse

from selenium import webdriver
from selenium.common.exceptions import TimeoutException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

#: Where Debian's chromium-driver puts the driver.
CHROMEDRIVER = "/usr/bin/chromedriver"
#: How to get both on Debian or Ubuntu (CI runs this in .ci/run when they are missing).
INSTALL_HINT = "apt-get install -y --no-install-recommends chromium chromium-driver"
#: The window a reader on a laptop has: wide enough for the theme's full three-column layout.
WINDOW_SIZE = (1280, 1024)
#: Folders of the build that hold assets and page sources, not pages.
SKIP_FOLDERS = frozenset({"_static", "_sources"})
TRACEBACK = "Traceback (most recent call last)"
GLUE = "{glue"

# Force lazy images to load, then report when every image has finished (loaded or failed).
_IMAGES_SETTLED_JS = """
for (const img of document.images) { if (img.loading === "lazy") img.loading = "eager"; }
return Array.from(document.images).every((img) => img.complete);
"""
# Every <img> that did not load. naturalWidth is 0 for a broken image; an SVG without intrinsic size
# also reports 0, so a zero is confirmed with decode(), which rejects only for an image that cannot render.
_BROKEN_IMAGES_JS = """
const done = arguments[arguments.length - 1];
const zero = Array.from(document.images).filter((img) => !(img.naturalWidth > 0));
Promise.all(zero.map((img) => img.decode().then(() => null, () => img.getAttribute("src") || img.currentSrc)))
  .then((srcs) => done(srcs.filter((s) => s !== null)));
"""
# The page's text, script and style contents excluded, hidden elements (collapsed outputs) included;
# "prose" also leaves out code, where a chapter may show MyST syntax such as {glue:text} on purpose.
_TEXTS_JS = """
const body = document.body.cloneNode(true);
body.querySelectorAll("script, style, noscript, template").forEach((el) => el.remove());
const all = body.textContent;
body.querySelectorAll("code, pre, kbd, samp").forEach((el) => el.remove());
return [all, body.textContent];
"""
# The search page has finished once its summary line is filled ("Search finished, ..." or "did not match").
_SEARCH_DONE_JS = """
const summary = document.querySelector("#search-results .search-summary");
return Boolean(summary && summary.textContent.trim());
"""
_SEARCH_LINKS_JS = """
return Array.from(document.querySelectorAll("#search-results ul.search li > a")).map((a) => a.href);
"""


class BrowserMissingError(RuntimeError):
    """Chromium or chromedriver is not installed."""


def browser_paths() -> tuple[str, str]:
    """Locate the Chromium binary and its driver.

    Returns
    -------
    tuple of str
        The path of ``chromium`` and of ``chromedriver``.

    Raises
    ------
    BrowserMissingError
        If either is missing; the message says how to install them.
    """
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = CHROMEDRIVER if Path(CHROMEDRIVER).is_file() else shutil.which("chromedriver")
    missing = [name for name, path in (("chromium", chromium), ("chromedriver", driver)) if not path]
    if missing:
        raise BrowserMissingError(
            f"{' and '.join(missing)} not found: the browser check needs Debian's chromium and chromium-driver. "
            f"Install them with:  sudo {INSTALL_HINT}   (CI's .ci/run does this when they are missing)")
    assert chromium and driver
    return chromium, driver


@contextmanager
def browser(width: int = WINDOW_SIZE[0], height: int = WINDOW_SIZE[1]) -> Iterator[WebDriver]:
    """Start headless Chromium through chromedriver, and quit it on exit.

    Parameters
    ----------
    width, height : int
        The window size in CSS pixels.

    Yields
    ------
    WebDriver
        A driver that records the browser console (read with ``driver.get_log("browser")``).

    Raises
    ------
    BrowserMissingError
        If Chromium or chromedriver is not installed.
    """
    chromium, driver_path = browser_paths()
    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager must never download anything
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", f"--window-size={width},{height}", "--disable-gpu",
                "--disable-dev-shm-usage",  # containers often have a tiny /dev/shm
                "--no-sandbox",  # Chromium refuses to run as root (CI containers) with its sandbox on
                "--no-first-run", "--disable-extensions", "--disable-background-networking"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    try:
        driver.set_page_load_timeout(60)
        driver.set_script_timeout(30)
        driver.set_window_size(width, height)
        yield driver
    finally:
        driver.quit()


class _QuietHandler(SimpleHTTPRequestHandler):
    """Serve files without logging every request to stderr."""

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass


@contextmanager
def serve(folder: Path) -> Iterator[str]:
    """Serve a folder over HTTP on a free loopback port, in a background thread.

    Parameters
    ----------
    folder : Path
        The folder to serve (the built HTML book).

    Yields
    ------
    str
        The base URL, ending in ``/``.
    """
    handler = functools.partial(_QuietHandler, directory=str(folder))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, name="browser-check-http", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def html_pages(folder: Path) -> list[Path]:
    """List every page of a built book, generated ones (search, genindex) included.

    Parameters
    ----------
    folder : Path
        The built HTML folder.

    Returns
    -------
    list of Path
        The ``*.html`` files outside ``_static`` and ``_sources``, relative to ``folder``, sorted.
    """
    pages = (p.relative_to(folder) for p in folder.rglob("*.html"))
    return sorted(p for p in pages if not SKIP_FOLDERS & set(p.parts[:-1]))


# Console errors that are harmless and would otherwise be reported for (nearly) every page. Each rule
# matches one exact message; anything else SEVERE is a problem.
HARMLESS_CONSOLE_ERRORS: tuple[re.Pattern[str], ...] = (
    # Sphinx 7.4 writes an inline script registered after the builder starts twice (once from the builder,
    # once from the registry), so sphinx-thebe's `const THEBE_JS_URL = ...` block is in every page's <head>
    # twice and the second copy throws. The first copy already defined the same constants (and this book
    # does not enable thebe), so nothing breaks for the reader.
    re.compile(r"\S+\.html(\?\S*)? \d+:\d+ Uncaught SyntaxError: Identifier 'THEBE_JS_URL' has already been declared"),
    # pydata-sphinx-theme reads the colour mode from localStorage; a fresh browser profile has none, so the
    # first page a browser opens logs this once and falls back to "auto", the default anyway.
    re.compile(r"\S+/_static/scripts/pydata-sphinx-theme\.js\S* \d+:\d+ "
               r'"Got invalid theme mode: \. Resetting to auto\."'),
    # The book declares no favicon, so Chromium sometimes asks the loopback server for /favicon.ico, which
    # no page links to. Matches only that request to this checker's own server.
    re.compile(r"http://127\.0\.0\.1:\d+/favicon\.ico - Failed to load resource: "
               r"the server responded with a status of 404 \(File not found\)"),
)


def is_harmless(entry: dict[str, Any]) -> bool:
    """Say whether a console entry is one of the known, harmless errors of ``HARMLESS_CONSOLE_ERRORS``.

    Parameters
    ----------
    entry : dict
        One entry of ``driver.get_log("browser")``.

    Returns
    -------
    bool
        True only if a rule matches the whole message.
    """
    message = str(entry.get("message", ""))
    return any(rule.fullmatch(message) for rule in HARMLESS_CONSOLE_ERRORS)


def _snippet(text: str, needle: str, width: int = 60) -> str:
    """Return the text around the first occurrence of ``needle``, on one line."""
    at = text.find(needle)
    return " ".join(text[max(0, at - width):at + len(needle) + width].split())


def check_page(driver: WebDriver, url: str, name: str, timeout: float = 30.0) -> list[str]:
    """Open one page and report its problems.

    Parameters
    ----------
    driver : WebDriver
        A driver from :func:`browser`.
    url : str
        The page's URL.
    name : str
        How the problems name the page.
    timeout : float
        Seconds to wait for the page and its images.

    Returns
    -------
    list of str
        One line per problem: a SEVERE console message, an image that did not load, unresolved
        ``{glue`` text outside code, or a Python traceback anywhere in the page; each problem once.
        Empty when clean.
    """
    driver.get_log("browser")  # drop what was logged before this check (e.g. by an earlier search)
    problems: list[str] = []
    try:
        driver.get(url)
        WebDriverWait(driver, timeout).until(
            lambda d: d.execute_script("return document.readyState") == "complete")
        WebDriverWait(driver, timeout).until(lambda d: d.execute_script(_IMAGES_SETTLED_JS))
    except (TimeoutException, WebDriverException) as err:
        problems.append(f"{name}: did not finish loading within {timeout:.0f} s ({err.msg})")
    broken = driver.execute_async_script(_BROKEN_IMAGES_JS)
    problems += [f"{name}: image did not load: {src}" for src in broken]
    all_text, prose = driver.execute_script(_TEXTS_JS)
    if GLUE in prose:
        problems.append(f"{name}: unresolved glue text: ...{_snippet(prose, GLUE)}...")
    if TRACEBACK in all_text:
        problems.append(f"{name}: Python traceback in the page: ...{_snippet(all_text, TRACEBACK)}...")
    driver.get("about:blank")  # leave the page, so that everything it logged is in the log below
    origin = urljoin(url, "/")
    for entry in driver.get_log("browser"):
        if entry.get("level") != "SEVERE" or is_harmless(entry):
            continue
        message = str(entry.get("message"))
        if "net::ERR_" in message and not message.startswith(origin):
            message += " (an external resource: it loads only with network access)"
        problems.append(f"{name}: console error: {message}")
    return list(dict.fromkeys(problems))  # once each: a broken image's 404 can be logged twice


def check_pages(driver: WebDriver, folder: Path, base_url: str, pages: Iterable[Path] | None = None) -> list[str]:
    """Open every page of a built book and report its problems.

    Parameters
    ----------
    driver : WebDriver
        A driver from :func:`browser`.
    folder : Path
        The built HTML folder, served at ``base_url``.
    base_url : str
        The URL from :func:`serve`.
    pages : iterable of Path, optional
        Pages relative to ``folder``; every page from :func:`html_pages` by default.

    Returns
    -------
    list of str
        Every problem of every page (see :func:`check_page`); empty when the book is clean.

    Raises
    ------
    ValueError
        If there are no pages to check (a missing build must not pass as a clean one).
    """
    pages = html_pages(folder) if pages is None else list(pages)
    if not pages:
        raise ValueError(f"no HTML pages under {folder}")
    problems: list[str] = []
    for page in pages:
        problems += check_page(driver, urljoin(base_url, page.as_posix()), page.as_posix())
    return problems


def search_results(driver: WebDriver, base_url: str, word: str, timeout: float = 30.0) -> list[str]:
    """Search the book with its own Sphinx search page and list the pages of the results.

    Parameters
    ----------
    driver : WebDriver
        A driver from :func:`browser`.
    base_url : str
        The URL from :func:`serve`.
    word : str
        The query.
    timeout : float
        Seconds to wait for the search to finish.

    Returns
    -------
    list of str
        The path (relative to ``base_url``, no query or anchor) each result links to, in order.

    Raises
    ------
    TimeoutError
        If the search page never reports that it finished.
    """
    driver.get(urljoin(base_url, "search.html?q=" + quote(word)))
    try:
        WebDriverWait(driver, timeout).until(lambda d: d.execute_script(_SEARCH_DONE_JS))
    except TimeoutException as err:
        raise TimeoutError(f"the search for {word!r} did not finish within {timeout:.0f} s") from err
    root = urlparse(base_url).path
    paths = [urlparse(href).path for href in driver.execute_script(_SEARCH_LINKS_JS)]
    return [re.sub(f"^{re.escape(root)}", "", path) for path in paths]


def search_finds(driver: WebDriver, base_url: str, word: str, page: str, timeout: float = 30.0) -> bool:
    """Say whether the book's search page lists ``page`` among the results for ``word``.

    Parameters
    ----------
    driver : WebDriver
        A driver from :func:`browser`.
    base_url : str
        The URL from :func:`serve`.
    word : str
        The query.
    page : str
        The expected page, relative to the book's root, e.g. ``notebooks/09_ann_boosting.html``.
    timeout : float
        Seconds to wait for the search to finish.

    Returns
    -------
    bool
        True if a result links to ``page`` (at any anchor).
    """
    return page in search_results(driver, base_url, word, timeout)
