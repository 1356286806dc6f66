"""The chat page in a real browser: headless Chromium driven by selenium.

Needs Debian's `chromium` and `chromium-driver` (`.ci/run` installs them); skipped with the
reason when they are not there. Set CONVREC_SCREENSHOT=path to keep the screenshot (the
README's picture comes from here).
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn

from convrec.serving.app import ServeSettings, Service, create_app
from convrec.serving.store import SessionStore
from tests.test_serve import free_port, served  # noqa: F401 (served: a fixture)

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        CHROMIUM is None or DRIVER is None,
        reason="no browser: apt-get install chromium chromium-driver",
    ),
]


@pytest.fixture
def server(served, tmp_path: Path) -> Iterator[str]:  # noqa: F811 (the imported fixture)
    service = Service([served], SessionStore(tmp_path / "s.sqlite"), ServeSettings())
    port = free_port()
    config = uvicorn.Config(create_app(service), host="127.0.0.1", port=port, log_level="warning")
    uv = uvicorn.Server(config)
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not uv.started:
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    uv.should_exit = True
    thread.join(timeout=10)


@pytest.fixture
def browser() -> Iterator[object]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service as DriverService

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1100,900"):
        options.add_argument(argument)
    options.add_argument("--disable-dev-shm-usage")
    driver = webdriver.Chrome(service=DriverService(DRIVER), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def test_two_messages_in_the_chat_page(server: str, browser, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as ready
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, 60)
    browser.get(server)
    wait.until(ready.presence_of_element_located((By.CSS_SELECTOR, "#model option")))
    assert "kbrd-demo" in browser.find_element(By.ID, "model").text

    box = browser.find_element(By.ID, "message")
    for n, message in enumerate(("I love sci-fi movies", "Something with drama?"), 1):
        box.send_keys(message, Keys.ENTER)
        wait.until(
            lambda b, n=n: len(b.find_elements(By.CSS_SELECTOR, ".turn.recommender .cards")) == n
        )
    turns = browser.find_elements(By.CSS_SELECTOR, ".turn")
    assert [t.get_attribute("class").split()[1] for t in turns] == ["seeker", "recommender"] * 2
    assert turns[0].find_element(By.CSS_SELECTOR, ".bubble").text == "I love sci-fi movies"
    cards = turns[3].find_elements(By.CSS_SELECTOR, ".card")
    assert len(cards) == 3
    titles = [c.find_element(By.CSS_SELECTOR, ".card-title").text for c in cards]
    reply = turns[3].find_element(By.CSS_SELECTOR, ".bubble").text
    assert all(title and title in reply for title in titles)
    assert "director" in cards[0].find_element(By.CSS_SELECTOR, ".facts").text.lower()
    assert browser.find_element(By.ID, "status").text == ""

    # a reload continues the conversation (the server kept it); "new" starts afresh
    browser.refresh()
    wait.until(lambda b: len(b.find_elements(By.CSS_SELECTOR, ".turn")) == 4)
    screenshot = Path(os.environ.get("CONVREC_SCREENSHOT", tmp_path / "chat.png"))
    assert browser.save_screenshot(str(screenshot)) and screenshot.stat().st_size > 10_000
    browser.find_element(By.ID, "new").click()
    wait.until(lambda b: len(b.find_elements(By.CSS_SELECTOR, ".turn")) == 0)
