"""A real app server (werkzeug, in a thread, free port on 127.0.0.1) over the tiny dataset, and headless Chromium."""

from __future__ import annotations

import shutil
import threading
from contextlib import contextmanager

import pytest
from playwright.sync_api import expect

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"  # Debian's package; Playwright's download is blocked
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--use-angle=swiftshader", "--enable-unsafe-swiftshader"]


# Assertions wait for their condition; a busy 2-core machine can take more than the 5 s default.
expect.set_options(timeout=30_000)


@pytest.fixture(scope="session")
def app_url(tiny_settings):
    from explorer.atlas import build_atlas

    build_atlas("tiny", tiny_settings)
    # a second dataset whose map is not built (listed after "tiny"): the page builds it with a background job
    from small_model import ingest_crystals, real_crystals

    ingest_crystals(tiny_settings, "unbuilt", real_crystals()[:6], tiny_settings.data_dir.parent / "unbuilt-cifs")
    # a dataset with its reconstruction check: three materials the small model gives back, one it cannot
    from small_model import reconstruction_dataset

    reconstruction_dataset(tiny_settings)
    # tetragonal and other perovskites, for the viewer's cells
    from small_model import perovskite_dataset

    perovskite_dataset(tiny_settings)
    with serving(tiny_settings) as url:
        yield url


@contextmanager
def serving(settings):
    """The app of ``settings`` served on a free port of 127.0.0.1 (werkzeug, in a thread): its address."""
    from werkzeug.serving import make_server

    from app import create_app

    server = make_server("127.0.0.1", 0, create_app(settings).server, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/"
    finally:
        server.shutdown()
        thread.join(timeout=10)


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield chromium
        chromium.close()


@contextmanager
def opened(browser, url: str):
    """A page of a new browser context at ``url``; ``page.errors`` collects the page's JavaScript errors."""
    context = browser.new_context(viewport={"width": 1500, "height": 950}, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(30_000)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(url)
    page.errors = errors
    try:
        yield page
    finally:
        context.close()


@pytest.fixture(scope="module")
def page(browser, app_url):
    with opened(browser, app_url) as page:
        yield page
