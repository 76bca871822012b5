"""``mmargin report`` / ``mmargin compare`` without a browser: escaping, offline pages,
optional figures shown when present and tolerated when absent, comparability notes, the
text highlighting and the stored clean inputs. (The browser checks: test_report_browser.)"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from report_fakes import image_results, text_results, write_fake_run

from mmargin.cli import main
from mmargin.report.compare import compare_table, render_compare
from mmargin.report.inputs import read_inputs, write_inputs
from mmargin.report.page import render_report, write_report
from mmargin.report.run import read_run
from mmargin_text.render import highlight

EVIL = 'great <script>window.pwned = 1</script> film & "fun"'


def external(page: str) -> list[str]:
    """Every reference a page makes to something outside itself."""
    refs = re.findall(r'(?:src|href)\s*=\s*"([^"]*)"', page) + re.findall(r"url\(([^)]*)\)", page)
    return [r for r in refs if not r.startswith(("data:", "#"))]


@pytest.fixture
def text_run(tmp_path: Path) -> Path:
    results = text_results([(EVIL, EVIL.replace("great", "awful"), 1.0),
                            ("a fine film", "a fine flim", 1.0),
                            ("it is good and long", "it is bad and short", 2.0)])  # fmt: skip
    return write_fake_run(tmp_path / "text", results, name="text-run", space="word",
                          distance="word-edits")  # fmt: skip


def test_script_in_a_sentence_is_escaped_and_the_page_is_self_contained(text_run: Path) -> None:
    page = render_report(read_run(text_run))
    assert "<script" not in page.lower()
    assert "&lt;script&gt;window.pwned = 1&lt;/script&gt;" in page
    assert "<del>great</del> <ins>awful</ins>" in page
    assert external(page) == []
    assert "<svg" in page  # plots inline


def test_highlight_marks_exactly_the_changed_words() -> None:
    # oracle: the word lists differ at positions 1 and 3 only
    out = highlight("a b c d", "a x c y")
    assert out == "a <del>b</del> <ins>x</ins> c <del>d</del> <ins>y</ins>"
    assert highlight("same words", "same words") == "same words"
    assert highlight("<b>", "<i>") == "<del>&lt;b&gt;</del> <ins>&lt;i&gt;</ins>"


def test_newer_figures_are_shown_and_older_runs_tolerated(tmp_path: Path) -> None:
    results, clean = image_results([0.5, 1.0, 2.0, 4.0])
    old = write_fake_run(
        tmp_path / "old", results, name="old", space="image", distance="l2", legacy=True
    )
    page = render_report(read_run(old))
    assert "Adversarial / random-noise ratio" not in page
    assert "written before they existed" in page and "inputs.npz" in page
    new = write_fake_run(
        tmp_path / "new", results, name="new", space="image", distance="l2", clean=clean,
        summary_extra={"random_ratio_median": 0.05, "normalised_auc": 0.3,
                       "normalised_scale": "random margin", "units": "L2 pixels",
                       "certified_robust_accuracy": {"0.5": 0.5}, "bracket_ratio_median": 2.0,
                       "indicator_counts": {"zero_gradients": 1}},
        row_extra=[{"random_ratio": 0.1 * (i + 1), "random_margin": 10.0,
                    "indicators": ["zero_gradients"] if i == 0 else []} for i in range(4)],
    )  # fmt: skip
    page = render_report(read_run(new))
    assert "Adversarial / random-noise ratio" in page
    assert "certified (lower bound)" in page  # the summary's certified accuracy column
    assert "zero_gradients" in page and "attack may have failed" in page
    assert "L2 pixels" in page
    # the image plugin's view: clean, adversarial and perturbation as PNG data URIs
    assert page.count('src="data:image/png;base64,') == 3 * 3
    assert external(page) == []


def test_compare_notes_what_is_not_comparable(tmp_path: Path) -> None:
    img, _ = image_results([0.5, 1.0])
    txt = text_results([("a b", "a c", 1.0), ("c d e", "x y e", 2.0)])
    a = write_fake_run(tmp_path / "a", img, name="img", space="image", distance="l2",
                       summary_extra={"normalised_auc": 0.4})  # fmt: skip
    b = write_fake_run(tmp_path / "b", txt, name="txt", space="word", distance="word-edits",
                       data={"name": "mr"}, summary_extra={"normalised_auc": 0.7})  # fmt: skip
    c = write_fake_run(tmp_path / "c", img, name="img2", space="image", distance="l2")
    table = compare_table([a, b])
    margin_line = next(line for line in table.splitlines() if line.startswith("median margin"))
    assert "†" in margin_line and "0.5 l2" in margin_line.replace("0.500", "0.5")
    auc_line = next(line for line in table.splitlines() if line.startswith("normalised"))
    assert "†" not in auc_line and "0.4" in auc_line and "0.7" in auc_line
    assert "not comparable (different space, different distance): median relative" in table
    assert "not comparable (different data): clean accuracy" in table
    assert "distance: l2 (img) vs word-edits (txt)" in table
    assert "†" not in compare_table([a, c])  # same space, distance and data
    page = render_compare([read_run(a), read_run(b)])
    assert "† not comparable (different space" in page and external(page) == []


def test_cli_report_compare_and_a_bad_folder(tmp_path: Path, text_run: Path, capsys) -> None:
    assert main(["report", str(text_run), "-o", str(tmp_path / "r.html")]) == 0
    assert (tmp_path / "r.html").read_text().startswith("<!DOCTYPE html>")
    assert main(["compare", str(text_run), str(text_run), "-o", str(tmp_path / "c.html")]) == 0
    assert "median margin" in capsys.readouterr().out
    assert main(["report", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mmargin: error:") and len(err.strip().splitlines()) == 1
    assert write_report(text_run) == text_run / "report.html"


def test_clean_inputs_round_trip_for_flipped_samples_only(tmp_path: Path) -> None:
    from mmargin.data import Dataset

    results, clean = image_results([0.5, 1.0])
    x = np.stack([clean["i0"], clean["i1"], clean["i0"] * 0])
    data = Dataset(x, np.array([0, 1, 2]), ["i0", "i1", "other"])
    assert write_inputs(tmp_path, results, data) == tmp_path / "inputs.npz"
    back = read_inputs(tmp_path)
    assert sorted(back) == ["i0", "i1"]
    np.testing.assert_array_equal(back["i1"], clean["i1"])
    words = Dataset(np.array(["a b", "c d"], dtype=object), np.array([0, 1]), ["i0", "i1"])
    assert write_inputs(tmp_path / "t", results, words) is None


def test_proven_share_beside_the_empirical_one_from_per_sample_bounds(tmp_path: Path) -> None:
    from dataclasses import replace

    results, _ = image_results([0.5, 1.0, 2.0, 4.0])
    bounds = [0.5, 0.4, None, 3.0]
    results = [replace(r, lower_bound=b) for r, b in zip(results, bounds, strict=True)]
    # a run written today carries the summary's certified accuracy; an older one only the
    # per-sample bounds, from which the page counts the proven share itself: same figures
    for legacy, header in ((False, "certified (lower bound)"),
                           (True, "proven (lower bound &gt; ε)")):  # fmt: skip
        folder = tmp_path / f"b{legacy}"
        run = read_run(write_fake_run(folder, results, name="b", space="image", distance="l2",
                                      legacy=legacy))  # fmt: skip
        page = render_report(run)
        assert header in page
        for eps, empirical in run.summary["robust_accuracy"].items():
            proven = sum(b is not None and b > float(eps) for b in bounds) / len(bounds)
            row = f'<td>{float(eps):.3g}</td><td class="num">{100 * empirical:.1f}%</td>'
            assert f'{row}<td class="num">{100 * proven:.1f}%</td>' in page


def test_runs_without_flips_errors_only_and_resisting_samples_still_report(
    tmp_path: Path,
) -> None:
    from mmargin.results import Status, result_record

    def records(status: Status, n: int, **fields: object) -> list:
        return [result_record(f"{status.value}{i}", 1, status, modality="image", space="image",
                              distance="l2", **fields) for i in range(n)]  # fmt: skip

    runs = {
        "misclassified": records(Status.MISCLASSIFIED, 3, margin=0.0, pred_label=0),
        "errors": records(Status.ERROR, 2, message="<b>broken</b>"),
        "resisting": records(Status.NOT_FLIPPED, 2, margin=float("inf"), pred_label=1),
    }
    folders = [write_fake_run(tmp_path / k, v, name=k, space="image", distance="l2")
               for k, v in runs.items()]  # fmt: skip
    for folder in folders:
        page = render_report(read_run(folder))
        assert "No flipped sample to show." in page and "<b>broken" not in page
    table = compare_table(folders)
    assert "†" in table  # 3, 2 and 2 samples of the data: not the same data
    assert "fake(split=test), first 3 samples (misclassified)" in table
    assert "nan" not in table


class _BrokenView:
    """A plugin whose gallery view raises (registered last, so asked first)."""

    @staticmethod
    def mmargin_render_sample(space: object, result: object, dataset_item: object) -> str:
        raise RuntimeError("<view> exploded")


def test_a_plugin_view_that_raises_does_not_sink_the_report(text_run: Path) -> None:
    from mmargin.plugin import hookimpl
    from mmargin.plugins import registered

    broken = _BrokenView()
    broken.mmargin_render_sample = hookimpl(_BrokenView.mmargin_render_sample)  # type: ignore[method-assign]
    with registered(broken, name="broken-view"):
        page = render_report(read_run(text_run))
    assert page.count("the text view failed: RuntimeError: &lt;view&gt; exploded") == 3
    assert "<view>" not in page
    assert page.count('class="sample"') == 3  # every sample still shown, with its extras


def test_component_tables_read_in_both_task_copy_formats() -> None:
    from mmargin.report.run import component

    # runs written today: the task copy is a re-runnable task file (loader/name + options)
    assert component({"loader": "mnist", "split": "test"}) == ("mnist", {"split": "test"})
    assert component({"name": "waveform", "sample_rate": 8000}) == (
        "waveform", {"sample_rate": 8000})  # fmt: skip
    # older runs: name plus an options table; in-memory data has no name
    assert component({"name": "mr", "options": {"split": "test"}}) == ("mr", {"split": "test"})
    assert component({"in_memory": "12 samples"}) == (None, {})
