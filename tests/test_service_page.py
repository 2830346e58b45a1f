"""The web page in real headless Chromium (Debian's, driven by Playwright): sign in, "more" twice, two batches of new
images and two points on the plot."""

import json
import shutil

import pytest

from .service_helpers import Server, add_user

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def page_server(tmp_path_factory):
    store = tmp_path_factory.mktemp("page") / "m.sqlite"
    token = add_user(store, "viewer")
    srv = Server(store).start()
    srv.token = token
    yield srv
    srv.stop()


def open_page(playwright, url: str):
    browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
    return browser, browser.new_page(viewport={"width": 1100, "height": 800})


def sign_in_and_click_more(page, server, clicks: int) -> None:
    page.goto(server.url + "/")
    page.fill("#token", server.token)
    page.click("#signin-button")
    page.wait_for_selector("#more:not([disabled])")
    page.fill("#steps", "4")  # quick batches
    for k in range(clicks):
        page.click("#more")
        page.wait_for_function(f"document.querySelectorAll('#gallery .batch').length >= {k + 1} && "
                               "!document.querySelector('#more').disabled", timeout=120_000)


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (make test installs Debian's chromium where apt can)")
def test_sign_in_more_twice_two_batches_and_two_points(page_server):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser, page = open_page(p, page_server.url)
        try:
            page.goto(page_server.url + "/")
            page.fill("#token", "wrong")
            page.click("#signin-button")
            page.wait_for_function("document.querySelector('#error').textContent.includes('401')")
            assert page.is_disabled("#more")
            sign_in_and_click_more(page, page_server, 2)
            batches = page.query_selector_all("#gallery .batch")
            assert len(batches) == 2
            srcs = [img.get_attribute("src") for b in batches for img in b.query_selector_all("img")]
            assert len(srcs) == 16 and len(set(srcs)) == 16
            page.wait_for_function("Array.from(document.querySelectorAll('#gallery img')).every(i => i.complete && i.naturalWidth == 32)")
            points = json.loads(page.get_attribute("#plot", "data-points"))
            assert len(points["novelty"]) == 2 and all(0 <= v <= 1 for v in points["novelty"]) and points["plain"] == []
            assert page.text_content("#mem-seen") == "16"
            page.click("#reset")
            page.wait_for_function("document.querySelector('#mem-seen').textContent === '0'")
        finally:
            browser.close()
