"""report.html in a real browser: headless Chromium at a desktop and a phone width.

The page is opened from disk (file://) as a reader would open a mailed file.
At 1280 and 390 CSS pixels: every image decodes, nothing is written to the
console, the page is no wider than the window, and a full-page screenshot is
taken (kept in the test's temporary folder; the path is printed). The checks
are first shown to catch what they claim to catch, on broken copies of the page.

Needs a Chromium (Debian: ``apt-get install chromium``); skipped without one.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.chromium import Chromium, find_chromium

WIDTHS = (1280, 390)
CHECKS = """(async () => {
  const images = [...document.images];
  await Promise.all(images.map(image => image.decode().catch(() => null)));
  return {
    images: images.length,
    undecoded: images.filter(image => !(image.complete && image.naturalWidth > 0)).map(image => image.alt),
    scrollWidth: document.documentElement.scrollWidth,
    innerWidth: window.innerWidth,
    sections: [...document.querySelectorAll("section")].map(section => section.id),
  };
})()"""


@pytest.fixture(scope="module")
def browser():
    executable = find_chromium()
    if executable is None:
        pytest.skip("Chromium is not installed (Debian: apt-get install chromium); the browser checks need it")
    with Chromium(executable) as chromium:
        yield chromium


def look(browser, page: Path, width: int) -> dict:
    browser.events.clear()
    browser.open(page.resolve().as_uri(), width)
    result = browser.evaluate(CHECKS)
    result["errors"] = browser.console_errors()
    return result


@pytest.mark.parametrize("width", WIDTHS)
def test_report_renders_in_chromium(browser, reported_run, width, tmp_path_factory):
    page = reported_run.path / "report.html"
    seen = look(browser, page, width)
    n_figures = len(list(reported_run.path.rglob("*.png")))
    assert seen["images"] == n_figures and seen["undecoded"] == []
    assert seen["errors"] == []
    assert seen["scrollWidth"] <= seen["innerWidth"] == width
    assert seen["sections"][0] == "verdict" and seen["sections"][-1] == "model-card"
    shot = tmp_path_factory.mktemp("screenshots") / f"report_{width}px.png"
    shot_width, shot_height = browser.screenshot(shot)
    print(f"\nscreenshot at {width} px: {shot} ({shot_width} x {shot_height})")
    assert shot_width == width and shot_height > 2000


def broken_copy(page: Path, folder: Path, old: str, new: str) -> Path:
    text = page.read_text(encoding="utf-8")
    assert old in text
    copy = folder / "report.html"
    copy.write_text(text.replace(old, new, 1), encoding="utf-8")
    return copy


def test_the_checks_catch_a_broken_image_a_network_load_and_a_wide_element(browser, reported_run, tmp_path):
    page = reported_run.path / "report.html"
    first_image = re.search(r'src="(data:image/[^"]+)"', page.read_text(encoding="utf-8")).group(1)

    broken = broken_copy(page, tmp_path, first_image, "data:image/png;base64,iVBORw0KGgoAAAA=")
    assert len(look(browser, broken, 1280)["undecoded"]) == 1

    remote = broken_copy(page, tmp_path, first_image, "https://example.invalid/figure.png")
    errors = look(browser, remote, 1280)["errors"]
    assert any("Content Security Policy" in e or "example.invalid" in e for e in errors), errors

    wide = broken_copy(page, tmp_path, "<main>", '<main><div style="width: 2000px">wide</div>')
    seen = look(browser, wide, 390)
    assert seen["scrollWidth"] > seen["innerWidth"]

