"""The web console, in a real headless chromium (Debian's, driven by Selenium through chromedriver).

A real server (werkzeug, threaded) on loopback serves the demo shop fixture
with the real encoders and an embedded Redis. The browser searches by text
and by an uploaded picture, sees the pictures load, clicks and buys (the
events land in Redis), promotes and rolls back a policy with the API key,
and reads the experiments page with its plots. Screenshots go to
``test-artifacts/console/`` (``RANKER_TEST_ARTIFACTS`` to change).

Chromium runs headless, without a sandbox (root in CI) and with background
networking off (the machine has no internet). ``make test`` installs
``chromium`` and ``chromium-driver`` with apt when they are missing.
"""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path

import pytest
import redis
import torch
from werkzeug.serving import make_server

from api import create_app
from ranker.client import ApiClient
from ranker.harness import Shopper, session_through
from ranker.live.events import EventLog
from ranker.live.registry import STARTING_POLICY
from ranker.ranking.policy import RankingPolicy

API_KEY = "console-key"
ARTIFACTS = Path(os.environ.get("RANKER_TEST_ARTIFACTS", "test-artifacts")) / "console"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


@pytest.fixture(scope="module")
def server(embedded_redis, demo_engine, tmp_path_factory):
    prefix = "console-test"
    client = redis.Redis.from_url(embedded_redis)
    for name in client.scan_iter(match=f"{{{prefix}}}*"):
        client.delete(name)
    data_dir = tmp_path_factory.mktemp("console-data")
    app = create_app(
        {
            "DATA_DIR": str(data_dir),
            "REDIS_URL": embedded_redis,
            "PREFIX": prefix,
            "ENGINE": demo_engine,
            "SEED": 0,
            "USER_KEY_SECRET": "secret",
            "API_KEY": API_KEY,
        }
    )
    policy = RankingPolicy.load(STARTING_POLICY)
    with torch.no_grad():
        for parameter in policy.net.parameters():
            parameter.mul_(-1.0)
    policy.save(data_dir / "policies" / "v-reversed", version="v-reversed", parent=policy.version)
    http = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=http.serve_forever, daemon=True)
    thread.start()
    yield {
        "url": f"http://127.0.0.1:{http.server_port}",
        "events": EventLog(client, prefix=prefix),
        "redis": client,
        "prefix": prefix,
        "service": app.extensions["ranking_service"],
    }
    http.shutdown()


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not Path(path).exists()]
    assert not missing, f"{missing} not installed: `apt-get install chromium chromium-driver` (make test does it as root)"
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
        "--no-first-run",
        "--window-size=1400,1000",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    yield driver
    driver.quit()


def wait(driver, condition, timeout=30):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(condition)


def by_css(selector):
    from selenium.webdriver.common.by import By

    return (By.CSS_SELECTOR, selector)


def images_loaded(driver, selector) -> list[int]:
    """naturalWidth of every matching <img> once all have finished loading (0 = broken)."""
    wait(driver, lambda d: d.execute_script(f"return [...document.querySelectorAll('{selector}')].every(i => i.complete)"))
    return driver.execute_script(f"return [...document.querySelectorAll('{selector}')].map(i => i.naturalWidth)")


def type_api_key(driver) -> None:
    field = driver.find_element(*by_css("#api-key"))
    field.clear()
    field.send_keys(API_KEY)
    driver.execute_script("document.getElementById('api-key').dispatchEvent(new Event('change'))")


def serving_shown(driver) -> str | None:
    """The serving version the policies page shows (read in the page, so a reload in between is harmless)."""
    return driver.execute_script("const e = document.getElementById('serving'); return e && e.textContent")


def interactions(server) -> list:
    return [event for _, event in server["events"].interactions()]


def test_search_by_text_shows_pictures_and_clicks_and_purchases_reach_redis(server, browser, demo_engine):
    browser.get(server["url"] + "/")
    type_api_key(browser)  # feedback needs the key on this server
    box = browser.find_element(*by_css("#query-text"))
    box.send_keys("leather bag")
    browser.find_element(*by_css("#search-form button")).click()
    wait(browser, lambda d: len(d.find_elements(*by_css("#results .card"))) == 12)
    widths = images_loaded(browser, "#results .card img.photo")
    assert len(widths) == 12 and all(width > 0 for width in widths), widths
    served = browser.find_element(*by_css("#served-by")).text
    assert "policy " + server["service"].policies.version in served and "no experiment" in served
    first = browser.find_elements(*by_css("#results .card"))[0]
    explain = first.find_element(*by_css(".explain")).text
    assert explain.startswith("score ") and "text " in explain and "policy " in explain
    cards = browser.find_elements(*by_css("#results .card"))
    reasons = [[line.text for line in card.find_elements(*by_css(".reasons li"))] for card in cards]
    assert all(len(shown) <= 2 and all(shown) for shown in reasons), reasons
    assert sum(1 for shown in reasons if shown) >= len(cards) // 2, reasons  # results say why, in words (an item with no
    # positive contribution that a true phrase describes says nothing rather than something false)
    first.find_element(*by_css(".why summary")).click()  # the contributions open without counting as a click
    contributions = first.find_element(*by_css(".why .contributions")).text
    assert "baseline" in contributions and "score here" in contributions and "click rate" in contributions
    first.find_element(*by_css(".why summary")).click()  # closed again
    item_id = first.get_attribute("data-item-id")
    before = len(interactions(server))
    first.click()
    wait(browser, lambda d: "click recorded" in first.text)
    first.find_element(*by_css("button.buy")).click()
    wait(browser, lambda d: "purchase recorded" in first.text)
    browser.save_screenshot(str(ARTIFACTS / "search.png"))
    stored = interactions(server)[before:]
    assert [(event.item_id, event.type) for event in stored] == [(item_id, "click"), (item_id, "purchase")]
    assert stored[0].ranking_id in served
    # the policies page's reward curve counts this ranking and its reward: click 0.1 + purchase 1.0
    ((version, points),) = server["events"].reward_series().items()
    assert version == server["service"].policies.version
    assert sum(rankings for _, rankings, _ in points) == 1 and sum(reward for _, _, reward in points) == pytest.approx(1.1)


def test_search_by_uploaded_picture(server, browser, demo_engine, tmp_path):
    item = next(item for item in demo_engine.store.items() if item.image)
    picture = tmp_path / "query.png"
    shutil.copy(item.image, picture)
    browser.get(server["url"] + "/")
    browser.find_element(*by_css("#query-image")).send_keys(str(picture))
    browser.find_element(*by_css("#search-form button")).click()
    wait(browser, lambda d: len(d.find_elements(*by_css("#results .card"))) > 0)
    titles = [card.find_element(*by_css(".title")).text for card in browser.find_elements(*by_css("#results .card"))]
    assert item.title in titles[:3], (item.title, titles[:3])  # the picture finds its own product
    explain = browser.find_elements(*by_css("#results .card .explain"))[0].text
    assert "image 0.000" not in explain  # the image channel scored it
    assert all(width > 0 for width in images_loaded(browser, "#results .card img.photo"))
    browser.save_screenshot(str(ARTIFACTS / "search-by-picture.png"))


def test_policies_page_promotes_and_rolls_back_with_the_api_key(server, browser):
    registry = server["service"].registry
    start = registry.current()
    browser.get(server["url"] + "/console/policies")
    rows = browser.find_elements(*by_css("#policies tbody tr"))
    assert {row.get_attribute("data-version") for row in rows} == {start, "v-reversed"}
    assert "v-reversed" in browser.find_element(*by_css('tr[data-version="v-reversed"]')).text
    assert start in browser.find_element(*by_css('tr[data-version="v-reversed"]')).text  # its parent: the lineage
    assert images_loaded(browser, "#reward-plot")[0] > 0
    browser.save_screenshot(str(ARTIFACTS / "policies.png"))
    browser.execute_script("localStorage.removeItem('ranker.apiKey')")
    browser.get(server["url"] + "/console/policies")
    browser.find_element(*by_css('button.promote[data-version="v-reversed"]')).click()
    wait(browser, lambda d: "promote failed" in d.find_element(*by_css("#toast")).text)
    assert registry.current() == start  # without the key nothing moved
    type_api_key(browser)
    browser.find_element(*by_css('button.promote[data-version="v-reversed"]')).click()
    wait(browser, lambda d: registry.current() == "v-reversed")
    wait(browser, lambda d: serving_shown(d) == "v-reversed")  # the page reloads after the promotion
    browser.find_element(*by_css("#rollback")).click()
    wait(browser, lambda d: registry.current() == start)
    wait(browser, lambda d: serving_shown(d) == start)


def test_experiments_page_shows_arms_intervals_srm_and_plots(server, browser, sim_catalog):
    client = ApiClient(server["url"], api_key=API_KEY)
    start = client.get("/v1/policies")["current"]
    client.post(
        "/v1/experiments",
        {
            "experiment_id": "exp-console",
            "name": "start vs reversed",
            "arms": [{"name": "control", "policy": start, "weight": 0.5}, {"name": "reversed", "policy": "v-reversed", "weight": 0.5}],
        },
    )
    shopper = Shopper(sim_catalog, seed=5)
    for _ in range(150):
        session_through(client, shopper, shopper.reset())
    browser.get(server["url"] + "/console/experiments")
    section = browser.find_element(*by_css("section#exp-console"))
    text = section.text
    assert "start vs reversed" in text and "running" in text and "Sample ratio: ok" in text
    rows = section.find_elements(*by_css("table.arms tbody tr"))
    assert [row.find_elements(*by_css("td"))[0].text for row in rows] == ["control", "reversed"]
    cells = rows[1].find_elements(*by_css("td"))
    assert "[" in cells[4].text and "]" in cells[4].text  # an interval under each metric
    prob_best = [float(row.find_elements(*by_css("td"))[8].text) for row in rows]
    assert sum(prob_best) == pytest.approx(1.0, abs=0.01)
    widths = images_loaded(browser, "section#exp-console img.plot")
    assert len(widths) == 2 and all(width > 0 for width in widths), widths
    browser.save_screenshot(str(ARTIFACTS / "experiments.png"))
    # the rank page says which arm served it
    browser.get(server["url"] + "/?q=backpack")
    wait(browser, lambda d: "experiment exp-console, arm " in d.find_element(*by_css("#served-by")).text)


def test_pictures_are_served_with_caching_headers(server, demo_engine):
    import urllib.error
    import urllib.request

    item = next(item for item in demo_engine.store.items() if item.image)
    with urllib.request.urlopen(f"{server['url']}/images/{item.item_id}") as response:
        assert response.headers["Content-Type"].startswith("image/") and "max-age=86400" in response.headers["Cache-Control"]
        etag = response.headers["ETag"]
        assert etag and len(response.read()) > 100
    request = urllib.request.Request(f"{server['url']}/images/{item.item_id}", headers={"If-None-Match": etag})
    with pytest.raises(urllib.error.HTTPError) as not_modified:
        urllib.request.urlopen(request)
    assert not_modified.value.code == 304
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(f"{server['url']}/images/no-such-item")
    assert missing.value.code == 404
