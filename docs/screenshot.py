"""Render the demo's citation view to the PNG the README shows (needs selenium and Debian's chromium + chromium-driver).

    .venv/bin/at2-rag demo && .venv/bin/python docs/screenshot.py reports/demo.html docs/citation_view.png
"""

import shutil
import sys
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By


def main(page: str, out: str, section: int = 3, width: int = 1300) -> None:
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--hide-scrollbars", f"--window-size={width},760"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    try:
        driver.get(Path(page).resolve().as_uri())
        view = driver.find_elements(By.CSS_SELECTOR, "section")[section]
        driver.execute_script("window.scrollTo(0, arguments[0].offsetTop - 8)", view)
        cited = [s for s in view.find_elements(By.CSS_SELECTOR, ".s") if s.get_attribute("data-cites")]
        if cited:
            cited[-1].click()  # light up what the last cited sentence cites
        driver.save_screenshot(out)
    finally:
        driver.quit()


if __name__ == "__main__":
    main(*sys.argv[1:3], *(int(a) for a in sys.argv[3:]))
