"""The report and comparison pages in a real headless browser (Debian's ``chromium``
driven by Playwright through ``executable_path``), with every network request refused.

Four small real runs (image, text, tabular, audio; two or three samples each, from the
shipped tasks) are written, reported and compared; each page must load with no console
error and no request leaving the page, show its plots and its modality's gallery view,
and a ``<script>`` inside an input sentence must appear as text and never run. Skips with
the reason when chromium or Playwright is missing (``make setup`` installs both).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import mmargin
from mmargin.report.compare import write_compare
from mmargin.report.page import write_report
from mmargin.tasks import load_task

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = next(filter(None, map(shutil.which, ("chromium", "chromium-browser"))), None)
playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH (make setup)")

EVIL = "<script>document.title = 'pwned'; window.pwned = 1</script>"


def _sentences() -> tuple[list[str], np.ndarray]:
    """Four real negative MR test sentences with a script in front (the shipped CNN still
    calls them negative, and the search flips them: some edits land inside the script)."""
    from mmargin_text.data import load_mr

    data = load_mr("test")
    negative = np.flatnonzero(data.y == 0)[:4]
    return [f"{EVIL} {data.x[i]}" for i in negative], np.zeros(len(negative), dtype=np.int64)


def _runs(folder: Path) -> dict[str, Path]:
    """Small real runs of the four modalities (cheap budgets, few samples)."""
    plans: dict[str, tuple[str, dict[str, Any]]] = {
        "image": ("image-mnist-l2.toml", {"samples": 2, "budget": 300}),
        "text": ("text-mr-word.toml", {"budget": 200}),
        "tabular": ("tabular-fraud-logreg.toml", {"samples": 6, "budget": 300}),
        "audio": ("audio-digits-l2.toml", {"samples": 2}),
    }
    out = {}
    for modality, (name, changes) in plans.items():
        task = replace(load_task(ROOT / "tasks" / name), out=str(folder / modality), **changes)
        data = _sentences() if modality == "text" else None
        mmargin.run_task(task, data=data)
        out[modality] = folder / modality
    return out


@pytest.fixture(scope="module")
def pages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("browser")
    runs = _runs(folder)
    found = {m: write_report(run, folder / f"{m}.html") for m, run in runs.items()}
    found["compare"] = write_compare(list(runs.values()), folder / "compare.html")
    return found


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with playwright_api.sync_playwright() as p:
        launched = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield launched
        launched.close()


class Visit:
    """One page opened offline: what it logged and every request it tried."""

    def __init__(self, browser: Any, path: Path) -> None:
        self.errors: list[str] = []
        self.requests: list[str] = []
        self.page = browser.new_page()
        url = path.as_uri()
        self.page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))

        def route(r: Any) -> None:
            if r.request.url == url:
                r.continue_()
            else:  # anything else would leave the file: refuse it and remember it
                self.requests.append(r.request.url)
                r.abort()

        self.page.route("**/*", route)
        self.page.goto(url, wait_until="load")

    def count(self, selector: str) -> int:
        return int(self.page.locator(selector).count())


def _offline_and_clean(visit: Visit) -> None:
    assert visit.errors == []
    assert visit.requests == []
    assert visit.count("script") == 0
    assert visit.count("svg") >= 3  # robust accuracy, margin histogram, per-class plot


def test_image_report(browser: Any, pages: dict[str, Path]) -> None:
    visit = Visit(browser, pages["image"])
    _offline_and_clean(visit)
    assert visit.count('.sample[data-modality="image"]') >= 1
    pictures = visit.page.locator('.sample img[src^="data:image/png"]')
    assert pictures.count() == 3 * visit.count(".sample")  # clean, adversarial, perturbation
    widths = pictures.evaluate_all("els => els.map(e => e.complete ? e.naturalWidth : 0)")
    assert min(widths) == 28  # decoded MNIST pictures


def test_text_report_shows_a_script_as_text(browser: Any, pages: dict[str, Path]) -> None:
    visit = Visit(browser, pages["text"])
    _offline_and_clean(visit)
    assert visit.count('.sample[data-modality="text"]') >= 1
    assert visit.count(".sample del") >= 1 and visit.count(".sample ins") >= 1
    shown = visit.page.locator(".gallery .sentence").all_inner_texts()
    assert len(shown) >= 2 and all("<script>" in s and "</script>" in s for s in shown)
    assert visit.page.evaluate("window.pwned") is None
    assert visit.page.title() != "pwned"


def test_tabular_report(browser: Any, pages: dict[str, Path]) -> None:
    visit = Visit(browser, pages["tabular"])
    _offline_and_clean(visit)
    assert visit.count('.sample[data-modality="tabular"] table') >= 1
    cells = visit.page.locator(".sample td").all_inner_texts()
    features = {"amount", "hour", "online", "merchant_category", "distance_from_home_km"}
    assert features & set(cells)


def test_audio_report_players_load(browser: Any, pages: dict[str, Path]) -> None:
    visit = Visit(browser, pages["audio"])
    _offline_and_clean(visit)
    players = visit.page.locator('.sample audio[src^="data:audio/wav"]')
    assert players.count() == 3 * visit.count(".sample")  # clean, adversarial, perturbation
    visit.page.wait_for_function(
        "[...document.querySelectorAll('audio')].every(a => a.readyState >= 1)", timeout=10_000
    )
    durations = players.evaluate_all("els => els.map(e => e.duration)")
    np.testing.assert_allclose(durations, 1.0, atol=0.01)  # the spoken digits are 1 s clips
    assert visit.count('.sample img[alt^="spectrogram"]') == players.count()


def test_compare_page(browser: Any, pages: dict[str, Path]) -> None:
    visit = Visit(browser, pages["compare"])
    assert visit.errors == [] and visit.requests == [] and visit.count("script") == 0
    assert visit.count("svg") >= 1
    header = visit.page.locator("table").nth(1).locator("th").all_inner_texts()
    assert header[1:] == ["image-mnist-l2", "text-mr-word", "tabular-fraud-logreg",
                          "audio-digits-l2"]  # fmt: skip
    assert visit.count(".note.bad") >= 1  # four modalities: native margins not comparable
