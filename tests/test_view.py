"""The citation view: escaped, self-contained, every [n] resolves; and in a real headless Chromium, clicking an
answer sentence lights up the sentences it cites, a <script> in the text never runs, and the page fits a phone."""

import html.parser
import json
import shutil
from pathlib import Path

import pytest

from at2_rag.view import cited_html, page
from conftest import SHARED

PAYLOAD = "<script>window.__pwned = 1</script>"


def _corpus_sources():
    rows = [json.loads(line) for line in (SHARED / "rag" / "corpus.jsonl").read_text().splitlines() if line.strip()]
    return [(r["title"], r["text"]) for r in rows]


def _cited(attributor):
    passages = [("Web security", f"A classic test string is {PAYLOAD}. Write &amp; to show an ampersand."),
               ("Rosetta Stone", "The Rosetta Stone was found in 1799. Champollion deciphered it in 1822."),
               ("Sourdough", "Sourdough bread is leavened by wild yeast.")]
    response = f"Champollion deciphered the Rosetta Stone in 1822. The test string is {PAYLOAD}."
    return attributor.cite("Who deciphered the Rosetta Stone?", passages, response=response)


class _Collect(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.ids, self.hrefs, self.scripts, self._in_script = set(), [], [], False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "id" in attrs:
            self.ids.add(attrs["id"])
        if tag == "a" and attrs.get("class") == "m":
            self.hrefs.append(attrs["href"])
        self._in_script = tag == "script"

    def handle_data(self, data):
        if self._in_script:
            self.scripts.append(data)

    def handle_endtag(self, tag):
        self._in_script = False


def test_fragment_is_escaped_and_markers_resolve(tiny_attributor):
    cited = _cited(tiny_attributor)
    fragment = cited._repr_html_()
    parsed = _Collect()
    parsed.feed(fragment)
    assert parsed.hrefs and all(h.startswith("#") and h[1:] in parsed.ids for h in parsed.hrefs)
    assert len(parsed.scripts) == 1 and "__pwned" not in parsed.scripts[0]  # only the view's own script
    assert "&lt;script&gt;window.__pwned" in fragment and "&amp;amp;" in fragment
    assert "http" not in fragment.split("<script>")[0]  # nothing fetched
    two = cited_html(cited) + cited_html(cited)
    assert len({i for i in _ids(two)}) == len(list(_ids(two)))  # two views on one page never share ids


def _ids(fragment):
    parsed = _Collect()
    parsed.feed(fragment)
    return parsed.ids


def _driver(width):
    webdriver = pytest.importorskip("selenium.webdriver")
    chromium, chromedriver = shutil.which("chromium"), shutil.which("chromedriver")
    if not chromium or not chromedriver:
        pytest.skip("Debian's chromium and chromium-driver are not installed")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run", f"--window-size={width},900"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(chromedriver), options=options)


def check_in_browser(path: Path, width: int = 1300, screenshot: Path | None = None) -> dict:
    """Load ``path`` in headless Chromium; check links, click-to-highlight, no script injection, width fit."""
    from selenium.webdriver.common.by import By

    driver = _driver(width)
    try:
        driver.get(path.resolve().as_uri())
        assert driver.execute_script("return window.__pwned === undefined")
        missing = driver.execute_script(
            "return [...document.querySelectorAll('a.m')].filter(a => !document.getElementById("
            "a.getAttribute('href').slice(1))).length")
        markers = driver.execute_script("return document.querySelectorAll('a.m').length")
        assert markers > 0 and missing == 0
        sentences = [s for s in driver.find_elements(By.CSS_SELECTOR, ".s") if s.get_attribute("data-cites")]
        assert sentences
        for sentence in sentences[:3]:
            driver.execute_script("arguments[0].scrollIntoView()", sentence)
            sentence.click()
            for cited_id in sentence.get_attribute("data-cites").split():
                cls = driver.find_element(By.ID, cited_id).get_attribute("class")
                assert "lit" in cls.split(), (cited_id, cls)
        shown = driver.execute_script(
            "return [...document.querySelectorAll('.ps')].some(e => e.textContent.includes('<script>'))")
        overflow = driver.execute_script("return document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 1, f"page is {overflow}px wider than a {width}px window"
        if screenshot is not None:
            driver.save_screenshot(str(screenshot))
        return {"script_text_shown": shown, "markers": markers}
    finally:
        driver.quit()


@pytest.mark.parametrize("width", [1300, 390])
def test_notebook_fragment_in_chromium(tiny_attributor, tmp_path, width):
    cited = _cited(tiny_attributor)
    notebook = tmp_path / "notebook.html"
    # a notebook output cell: the fragment inside someone else's page
    notebook.write_text(f"<!doctype html><html><head><meta charset='utf-8'><meta name='viewport' "
                        f"content='width=device-width,initial-scale=1'></head><body><div class='output_html'>"
                        f"{cited._repr_html_()}</div></body></html>", encoding="utf-8")
    result = check_in_browser(notebook, width)
    assert result["script_text_shown"]


@pytest.mark.slow
def test_demo_page_in_chromium(attributor, tmp_path):
    from at2_rag.demo import rag_items, retriever, run

    name, retrieve = retriever([])
    items = rag_items(SHARED / "rag", retrieve)
    summary = run(attributor, items, retrieve, name, 2, None, tmp_path / "demo.html")
    for row in summary[:3]:
        assert set(row["gold"]) <= set(row["kept"]) and set(row["gold"]) <= set(row["cited"]), row
    for width in (1300, 390):
        result = check_in_browser(tmp_path / "demo.html", width)
        assert result["script_text_shown"]
    assert page([]).startswith("<!doctype html>")
