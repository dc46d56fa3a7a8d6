"""Driving the TopoReg page in headless Debian Chromium through Selenium: open it, read the trame state, pick items in
Vuetify selects, click sliders and switches, and grab a view's streamed image once it stopped changing.

Why these waits: the slice views arrive as images over the websocket (trame-rca), so a page is "ready" only when
every view image has pixels (`naturalWidth > 0`), and a view shows a change only once the server re-rendered and
streamed it; `settled_view` waits for the image to change and then to stay the same.
"""

from __future__ import annotations

import io
import shutil
import time
from pathlib import Path

import numpy as np

CHROMIUM = ("/usr/bin/chromium", "chromium", "chromium-browser")
CHROMEDRIVER = ("/usr/bin/chromedriver", "chromedriver")


def _which(names) -> str | None:
    for name in names:
        found = name if Path(name).is_file() else shutil.which(name)
        if found:
            return found
    return None


def browser_missing() -> str | None:
    """Why the end-to-end test cannot run here (None when it can)."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install 'toporeg[test]')"
    if _which(CHROMIUM) is None:
        return "Debian's chromium is not installed (apt-get install chromium)"
    if _which(CHROMEDRIVER) is None:
        return "chromedriver is not installed (apt-get install chromium-driver)"
    return None


class Page:
    """One headless Chromium window on the TopoReg page."""

    def __init__(self, url: str, width: int = 1600, height: int = 1000, timeout: float = 60.0):
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
        from selenium.webdriver.support.ui import WebDriverWait

        options = webdriver.ChromeOptions()
        for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    f"--window-size={width},{height}", "--force-device-scale-factor=1"):
            options.add_argument(arg)
        options.binary_location = _which(CHROMIUM)
        self.driver = webdriver.Chrome(service=Service(_which(CHROMEDRIVER)), options=options)
        self.wait = WebDriverWait(self.driver, timeout)
        start = time.monotonic()
        self.driver.get(url)
        self.wait.until(lambda d: d.execute_script(
            "return window.trame && Array.from(document.images).filter(i => i.naturalWidth > 0).length") >= 4)
        self.ready_seconds = time.monotonic() - start

    def close(self) -> None:
        self.driver.quit()

    # --- state ---------------------------------------------------------------------------------------------
    def state(self, key: str):
        return self.driver.execute_script("return window.trame.state.get(arguments[0])", key)

    def set_state(self, key: str, value) -> None:
        """What a hand-crafted client could send (used to check that the server refuses it)."""
        self.driver.execute_script("window.trame.state.set(arguments[0], arguments[1])", key, value)

    def until(self, condition, timeout: float = 60.0, what: str = "condition"):
        """Poll `condition()` until truthy; raise with the page's error line when it does not come."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            value = condition()
            if value:
                return value
            time.sleep(0.2)
        raise TimeoutError(f"{what} not reached in {timeout:.0f} s; page error: {self.state('job_error')!r}, "
                           f"message: {self.state('job_message')!r}")

    # --- widgets -------------------------------------------------------------------------------------------
    def find(self, css: str):
        from selenium.webdriver.common.by import By

        return self.driver.find_element(By.CSS_SELECTOR, css)

    def click(self, css: str, timeout: float = 10.0) -> None:
        """Scroll the element into view and click it, retrying while an animation (a panel expanding, a menu
        closing) still covers it."""
        from selenium.common.exceptions import ElementClickInterceptedException, ElementNotInteractableException

        end = time.monotonic() + timeout
        while True:
            element = self.find(css)
            self.driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", element)
            if not self._settled(element) and time.monotonic() < end:
                continue  # still moving (an expansion panel opening): a click now can land beside it
            try:
                element.click()
                return
            except (ElementClickInterceptedException, ElementNotInteractableException):
                if time.monotonic() > end:
                    raise
                time.sleep(0.3)

    @staticmethod
    def _settled(element, pause: float = 0.15) -> bool:
        """Displayed and at the same place twice in a row."""
        if not element.is_displayed():
            time.sleep(pause)
            return False
        before = element.rect
        time.sleep(pause)
        return element.rect == before

    def choose(self, css: str, *titles: str) -> None:
        """Open the VSelect with class `css` and click the items with these titles (several: a multiple select)."""
        from selenium.webdriver.common.by import By
        from selenium.webdriver.common.keys import Keys
        from selenium.webdriver.support import expected_conditions as EC

        self.click(f".{css} .v-field")
        for title in titles:
            xpath = ("//div[contains(@class,'v-overlay--active')]//div[contains(@class,'v-list-item')]"
                     f"[.//div[contains(@class,'v-list-item-title')][normalize-space()='{title}']]")
            self.wait.until(EC.element_to_be_clickable((By.XPATH, xpath))).click()
        if len(titles) > 1 or self.driver.find_elements(By.CSS_SELECTOR, ".v-overlay--active .v-list"):
            self.driver.find_element(By.TAG_NAME, "body").send_keys(Keys.ESCAPE)
        self.wait.until(lambda d: not d.find_elements(By.CSS_SELECTOR, ".v-overlay--active .v-list"))

    def type_number(self, css: str, value: int) -> None:
        from selenium.webdriver.common.keys import Keys

        field = self.find(f".{css} input")
        self.driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", field)
        field.send_keys(Keys.CONTROL, "a")
        field.send_keys(str(value), Keys.TAB)

    def slide(self, css: str, fraction: float) -> None:
        """Click the slider's track at `fraction` of its length (what a user does to jump to a value)."""
        from selenium.webdriver.common.action_chains import ActionChains

        track = self.find(f".{css} .v-slider-track")
        self.driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", track)
        width = track.size["width"]
        ActionChains(self.driver).move_to_element_with_offset(track, int((fraction - 0.5) * width), 0).click().perform()

    # --- views ---------------------------------------------------------------------------------------------
    def view_image(self, tag: str):
        """The streamed <img> of view `tag` (Red, Yellow, Green, ThreeD)."""
        from selenium.webdriver.common.by import By

        return self.driver.find_element(By.XPATH, f"//*[@id='toporeg-view-{tag}']/parent::*//img")

    def settled_view(self, tag: str, previous: str | None = None, timeout: float = 30.0,
                     quiet: float = 1.0) -> tuple[np.ndarray, str]:
        """The view's pixels (H, W, 3) once its image differs from `previous` (a src) and then stayed the same for
        `quiet` seconds; returns (pixels, src)."""
        from PIL import Image

        image = self.view_image(tag)
        end, src, since = time.monotonic() + timeout, image.get_attribute("src"), time.monotonic()
        while time.monotonic() < end:
            time.sleep(0.2)
            now = image.get_attribute("src")
            if now != src:
                src, since = now, time.monotonic()
            elif (previous is None or src != previous) and time.monotonic() - since >= quiet:
                break
        pixels = np.asarray(Image.open(io.BytesIO(image.screenshot_as_png)).convert("RGB")).astype(np.int16)
        return pixels, src

    def screenshot(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.driver.save_screenshot(str(path))
