"""The draw-a-digit page in a real browser: Debian's headless Chromium, driven through Selenium and
Debian's chromium-driver, opens `mnist-tch serve`'s page, draws digits with pointer events and reads the
prediction the page shows. The model is a one-epoch MLP on digit MNIST (data/mnist, installed by
scripts/setup.sh). A screenshot of the page after drawing is kept in target/test-artifacts/serve-page.png.
Skipped, with the reason printed (pytest -rs), where Chromium, its driver or the data is missing."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from common import BINARY, ROOT

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (scripts/requirements.txt)")
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")
MNIST = ROOT / "data" / "mnist"
ARTIFACTS = ROOT / "target" / "test-artifacts"

pytestmark = [
    pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER),
                       reason="no chromium/chromedriver: scripts/setup.sh installs Debian's chromium and chromium-driver"),
    pytest.mark.skipif(not (MNIST / "train-images-idx3-ubyte").exists(),
                       reason="no digit MNIST in data/mnist: scripts/setup.sh installs it"),
]

# Strokes in a 280x280 pad, as (x, y) points; each list is one stroke.
DIGITS = {
    "1": [[(140, 40), (140, 240)]],
    "0": [[(140, 40), (90, 70), (75, 140), (90, 210), (140, 240), (190, 210), (205, 140), (190, 70), (140, 40)]],
    "7": [[(70, 50), (210, 50), (120, 240)]],
}


@pytest.fixture(scope="module")
def page_url(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("mnist") / "run"
    subprocess.run([str(BINARY), "train", "--data", str(MNIST), "--out", str(run_dir), "--epochs", "1",
                    "--device", "cpu", "--quiet"], check=True, capture_output=True)
    server = subprocess.Popen([str(BINARY), "serve", "--model", str(run_dir), "--port", "0", "--device", "cpu"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    url = None
    for line in server.stdout:
        if "listening on http://" in line:
            url = "http://" + line.split("http://")[1].split()[0]
            break
    assert url, server.stderr.read()
    yield url
    server.terminate()
    assert server.wait(timeout=30) == 0


@pytest.fixture(scope="module")
def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=800,640"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=webdriver.ChromeService(executable_path=CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def draw(driver, strokes):
    pad = driver.find_element(By.ID, "pad")
    origin_x, origin_y = -pad.size["width"] / 2, -pad.size["height"] / 2   # offsets are from the centre
    for stroke in strokes:
        actions = ActionChains(driver, duration=20)
        (x, y), rest = stroke[0], stroke[1:]
        actions.move_to_element_with_offset(pad, origin_x + x, origin_y + y).click_and_hold()
        for (nx, ny) in rest:
            # Several moves per segment, so the page sees a stroke, not a jump.
            for step in range(1, 6):
                px, py = x + (nx - x) * step / 5, y + (ny - y) * step / 5
                actions.move_to_element_with_offset(pad, origin_x + px, origin_y + py)
            x, y = nx, ny
        actions.release().perform()


def shown(driver) -> list[tuple[str, str]]:
    """The (class, percentage) rows the page shows, once the latest drawing's answer is on screen."""
    WebDriverWait(driver, 20).until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-state") == "shown")
    rows = driver.find_elements(By.CSS_SELECTOR, "#top .row")
    return [(r.find_element(By.CLASS_NAME, "name").text, r.find_element(By.CLASS_NAME, "prob").text) for r in rows]


@pytest.mark.parametrize("digit", list(DIGITS))
def test_a_drawn_digit_is_recognised(browser, page_url, digit):
    browser.get(page_url)
    assert browser.title == "mnist-tch: draw a digit"
    draw(browser, DIGITS[digit])
    rows = shown(browser)
    assert len(rows) == 3, rows
    assert rows[0][0] == digit, f"drew {digit}, the page shows {rows}"
    assert rows[0][1].endswith("%") and float(rows[0][1][:-1]) > 50, rows
    # The 28x28 picture the model saw is drawn: some of its pixels are lit.
    lit = browser.execute_script("""
        const c = document.getElementById('seen');
        return Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data).filter((v, i) => i % 4 == 0 && v > 128).length;""")
    assert [browser.execute_script("return document.getElementById('seen').width"), lit > 20] == [28, True]
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / f"serve-page-{digit}.png"))
    # Clear empties the page.
    browser.find_element(By.ID, "clear").click()
    assert browser.find_elements(By.CSS_SELECTOR, "#top .row") == []
