"""The demo page in a real browser: headless Chromium against a real ``etalage serve`` on a loopback socket.

Needs Debian's ``chromium`` and ``chromium-driver`` (``.ci/run`` installs them
when it runs as root); without them the test is skipped and says so. Set
``ETALAGE_DEMO_SCREENSHOT=docs/demo-page.png`` to refresh the README's picture.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from urllib.request import urlopen

import pyarrow.parquet as pq
import pytest

from tests.conftest import running_server, tenant_products

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (CHROMIUM and DRIVER),
        reason="headless Chromium is not installed (apt-get install chromium chromium-driver)",
    ),
]


@pytest.fixture
def browser():
    from selenium import webdriver

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1400,1000",
        "--disable-background-networking",
        "--disable-extensions",
        "--no-first-run",
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",  # offline: no CDN can answer for a page
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=DRIVER))
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def test_clicking_a_product_shows_looks_like_this_and_viewed_together(visual_shop, tmp_path, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    shop = tmp_path / "shop"
    shutil.copytree(visual_shop, shop, symlinks=True)  # the server writes exposures into the shop folder
    catalogue = pq.read_table(shop / "catalogue.parquet")
    nl = tenant_products(catalogue, "nl")
    wait = WebDriverWait(browser, 60)

    with running_server(shop / "etalage.toml", workers=1) as (base, _):
        browser.get(f"{base}/demo?tenant=nl")
        wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "true")
        tiles = browser.find_elements(By.CSS_SELECTOR, "#grid .product")
        assert len(tiles) == 24
        wait.until(
            lambda d: d.execute_script(
                "return [...document.querySelectorAll('#grid img')].every(i => i.complete && i.naturalWidth > 0)"
            )
        )

        tiles[0].click()
        wait.until(
            lambda d: (
                d.find_elements(By.CSS_SELECTOR, "#looks .product")
                and d.find_elements(By.CSS_SELECTOR, "#together .product")
            )
        )
        chosen = tiles[0].get_attribute("data-id")
        looks = [e.get_attribute("data-id") for e in browser.find_elements(By.CSS_SELECTOR, "#looks .product")]
        together = [e.get_attribute("data-id") for e in browser.find_elements(By.CSS_SELECTOR, "#together .product")]
        assert len(looks) == 8 and chosen not in looks and set(looks) <= nl
        assert together and chosen not in together and set(together) <= nl
        variant = browser.find_element(By.ID, "variant")
        assert variant.get_attribute("data-variant") in ("llr", "visual_blend")
        assert variant.text.startswith(f"variant {variant.get_attribute('data-variant')} of recommendations: ")
        assert "efficientnet-lite0" in browser.find_element(By.ID, "looks-note").text
        wait.until(
            lambda d: d.execute_script(
                "return [...document.querySelectorAll('#looks img')].every(i => i.complete && i.naturalWidth > 0)"
            )
        )
        titles = dict(
            zip(catalogue.column("product_id").to_pylist(), catalogue.column("title").to_pylist(), strict=True)
        )
        captions = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "#looks .product span")]
        assert captions == [f"{rank}. {titles[p]}" for rank, p in enumerate(looks, 1)]  # titles, not ids
        screenshot = tmp_path / "demo-page.png"
        assert browser.save_screenshot(str(screenshot)) and screenshot.stat().st_size > 10_000
        if os.environ.get("ETALAGE_DEMO_SCREENSHOT"):
            shutil.copy(screenshot, Path(os.environ["ETALAGE_DEMO_SCREENSHOT"]))

        # A look-alike clicked becomes the chosen product, under its title.
        browser.find_elements(By.CSS_SELECTOR, "#looks .product")[1].click()
        wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#chosen strong").text == titles[looks[1]])

        # Two products clicked: the visit's list, as the visit route answers it.
        visit = [chosen, looks[1]]
        wait.until(lambda d: d.find_element(By.ID, "visit").get_attribute("data-products") == ",".join(visit))
        shown = [e.get_attribute("data-id") for e in browser.find_elements(By.CSS_SELECTOR, "#visit .product")]
        answer = json.loads(
            urlopen(f"{base}/v1/nl/sessions/recommendations?limit=8&products={','.join(visit)}", timeout=30).read()
        )
        assert shown == [item["product_id"] for item in answer["items"]] and len(shown) == 8
        assert not set(shown) & set(visit) and set(shown) <= nl
        assert "products clicked so far" in browser.find_element(By.ID, "visit-note").text
        wait.until(
            lambda d: (
                looks[1]
                not in [e.get_attribute("data-id") for e in d.find_elements(By.CSS_SELECTOR, "#looks .product")]
            )
        )

        # Finding by photo: upload a product's own picture; it comes back first.
        image = dict(
            zip(catalogue.column("product_id").to_pylist(), catalogue.column("image").to_pylist(), strict=True)
        )[chosen]
        browser.find_element(By.ID, "upload").send_keys(str(shop / image))
        wait.until(lambda d: "your photo" in d.find_element(By.ID, "looks-note").text)
        first = browser.find_element(By.CSS_SELECTOR, "#looks .product").get_attribute("data-id")
        same = {
            p
            for p, i in zip(
                catalogue.column("product_id").to_pylist(), catalogue.column("image").to_pylist(), strict=True
            )
            if (shop / i).read_bytes() == (shop / image).read_bytes()
        }
        assert first in same


def test_the_api_docs_page_shows_every_route_without_the_internet(visual_shop, tmp_path, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    shop = tmp_path / "shop"
    shutil.copytree(visual_shop, shop, symlinks=True)
    with running_server(shop / "etalage.toml", workers=1) as (base, _):
        schema = json.loads(urlopen(f"{base}/schema/openapi.json", timeout=30).read())
        browser.get(f"{base}/schema/swagger")
        WebDriverWait(browser, 60).until(lambda d: d.find_elements(By.CSS_SELECTOR, ".opblock"))
        shown = {e.get_attribute("data-path") for e in browser.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")}
        assert shown == set(schema["paths"])
        loaded = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
        assert loaded and all(url.startswith(base) for url in loaded), loaded
