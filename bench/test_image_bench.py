"""The image benchmark's own logic on hand-made cases: pooling over budgets, the choice of
the peer to time against, the L0 distance check and the headline table (no peers needed:
Foolbox, adv_lib and torchattacks are imported only when their methods run)."""

from __future__ import annotations

import copy
import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import image_bench
import image_report
import metrics

INF = math.inf


def _row(method: str, dist: list[float] | None, seconds: float = 1.0, **extra: Any) -> dict:
    row: dict[str, Any] = {
        "method": method,
        "library": "mmargin" if method.startswith("mmargin") else method.split(".")[0],
        "attack": method.split(".")[-1].upper(),
        "status": "ok" if dist is not None else "error",
        "seconds": seconds,
        "cpu_seconds": seconds,
        "passes_per_sample": 10.0,
        "within_budget": True,
        **extra,
    }
    if dist is not None:
        row["_dist"] = np.array(dist)
    else:
        row["error"] = "RuntimeError: boom"
    return row


# ------------------------------------------------------------------ pooling over budgets
def test_pooled_best_takes_every_budget_and_scores_against_it() -> None:
    correct = np.array([False, True, True, True])
    runs = {
        100: [_row("mmargin", [0.0, 2.0, 2.0, INF]), _row("adv_lib.ddn", [0.0, 1.0, 3.0, 4.0])],
        250: [_row("mmargin", [0.0, 1.5, 2.0, 4.0]), _row("adv_lib.ddn", None)],
    }
    pooled, per_budget = metrics.score_runs(runs, correct)
    np.testing.assert_array_equal(pooled, [0.0, 1.0, 2.0, 4.0])
    np.testing.assert_array_equal(per_budget[100], [0.0, 1.0, 2.0, 4.0])
    np.testing.assert_array_equal(per_budget[250], [0.0, 1.5, 2.0, 4.0])
    # pooled: eps* = 4, clean accuracy 3/4 -> A0 = 3, A* = 7/4.
    # mmargin @100 clipped (0, 2, 2, 4): A = 2 -> 1 - 0.25 / 1.25 = 0.8
    assert runs[100][0]["optimality"] == pytest.approx(0.8)
    # mmargin @250 (0, 1.5, 2, 4): A = 7.5/4 -> 1 - 0.125 / 1.25 = 0.9; it is its
    # budget's best on every sample (the other row failed), so 1 at its budget
    assert runs[250][0]["optimality"] == pytest.approx(0.9)
    assert runs[250][0]["optimality_at_budget"] == pytest.approx(1.0)
    # ddn @100 (0, 1, 3, 4): A = 2 -> 0.8 pooled; at budget 100 the best is the pooled one
    assert runs[100][1]["optimality"] == pytest.approx(0.8)
    assert runs[100][1]["optimality_at_budget"] == pytest.approx(0.8)
    assert runs[100][1]["best_on_fraction"] == pytest.approx(2 / 3)  # samples 1 and 3
    assert runs[100][0]["success_rate"] == pytest.approx(2 / 3)
    assert "optimality" not in runs[250][1]  # an error row gets no score
    # main-run time ratio: mmargin seconds / method seconds at the same budget
    assert runs[100][1]["mmargin_time_ratio"] == pytest.approx(1.0)


def test_no_row_ran_means_no_pooled_best() -> None:
    pooled, per_budget = metrics.score_runs({100: [_row("mmargin", None)]}, np.array([True]))
    assert pooled is None and per_budget == {}


# ------------------------------------------------------------ the peer mmargin is timed on
def test_fastest_peer_reaching_the_threshold() -> None:
    rows = [
        _row("mmargin", [1.0], seconds=0.1, optimality=1.0),  # never a peer
        _row("mmargin.early", [1.0], seconds=0.05, optimality=1.0),  # never a peer
        _row("foolbox.deepfool", [1.0], seconds=0.2, optimality=0.5),  # fast but too weak
        _row("adv_lib.alma", [1.0], seconds=3.0, optimality=0.99),
        _row("adv_lib.ddn", [1.0], seconds=2.0, optimality=0.9),  # exactly 0.9 qualifies
        _row("foolbox.ddn", None, seconds=0.01, optimality=0.95),  # crashed
    ]
    assert metrics.fastest_qualifying(rows) == "adv_lib.ddn"
    assert metrics.fastest_qualifying(rows, threshold=0.95) == "adv_lib.alma"
    assert metrics.fastest_qualifying(rows, threshold=0.999) is None
    assert image_bench.timing_targets(rows, every_peer=False) == ["adv_lib.ddn"]
    assert image_bench.timing_targets(rows, every_peer=True) == [
        "mmargin.early",
        "foolbox.deepfool",
        "adv_lib.alma",
        "adv_lib.ddn",
    ]


def test_ties_and_undefined_optimality() -> None:
    rows = [
        _row("b.x", [1.0], seconds=1.0, optimality=0.95),
        _row("a.x", [1.0], seconds=1.0, optimality=0.92),
        _row("c.x", [1.0], seconds=0.5, optimality=math.nan),
    ]
    assert metrics.fastest_qualifying(rows) == "a.x"


# ------------------------------------------------------------------------ L0 re-check
def test_l0_counts_changed_pixels_exactly() -> None:
    delta = torch.zeros(3, 1, 4, 4)
    delta[0, 0, 0, 0] = 1e-7  # any nonzero change counts
    delta[0, 0, 3, 2] = -0.5
    delta[1, 0, 1, 1] = -0.0  # negative zero is no change
    delta[2] = 1.0
    sizes = image_bench.perturbation_sizes(delta, "l0")
    np.testing.assert_array_equal(sizes.numpy(), [2.0, 0.0, 16.0])
    # several channels: a pixel counts once whichever of its channels changed
    rgb = torch.zeros(1, 3, 2, 2)
    rgb[0, :, 0, 0] = 0.1
    rgb[0, 2, 1, 1] = 0.2
    assert image_bench.perturbation_sizes(rgb, "l0").item() == 2.0
    # the other norms against their closed forms
    d = torch.tensor([[3.0, -4.0]])
    assert image_bench.perturbation_sizes(d, "l2").item() == pytest.approx(5.0)
    assert image_bench.perturbation_sizes(d, "l1").item() == pytest.approx(7.0)
    assert image_bench.perturbation_sizes(d, "linf").item() == pytest.approx(4.0)


def test_verify_counts_pixels_of_valid_adversarials_only() -> None:
    # a two-class linear model on 2x2 one-channel images: class 1 iff the pixel sum > 2
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2))
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor([[0.0] * 4, [1.0] * 4]))
        model[1].bias.copy_(torch.tensor([0.0, -2.0]))
    x = torch.full((3, 1, 2, 2), 0.25)  # sum 1: class 0
    y = torch.zeros(3, dtype=torch.long)
    adv = x.clone()
    adv[0, 0, 0, :] = 1.0  # sum 2.5 with 2 pixels changed: adversarial
    adv[1, 0, 0, 0] = 1.0  # sum 1.75: not adversarial -> inf
    adv[2] = 1.0  # all four changed, adversarial; but sample 2 counts as misclassified
    correct = torch.tensor([True, True, False])
    dist, checks = image_bench._verify(model, x, y, adv, correct, "l0")
    np.testing.assert_array_equal(dist, [2.0, INF, 0.0])
    assert checks["not_adversarial"] == 1


# --------------------------------------------------------------------- report rendering
def _synthetic_report() -> dict[str, Any]:
    def row(method: str, opt: float, **extra: Any) -> dict[str, Any]:
        r = _row(method, None, optimality=opt, **extra)
        r.update(status="ok", success_rate=1.0, median_distance=1.0)
        r["optimality_attackbench_code"] = opt
        return r

    runs = {
        "250": [row("mmargin", 0.97), row("adv_lib.ddn", 0.9)],
        "1000": [
            row("mmargin", 0.995),
            row("adv_lib.alma", 0.98, seconds=5.0),
            row("adv_lib.ddn", 0.95, seconds=2.0, paired_timing={"median_ratio": 0.85}),
        ],
    }
    norm_block = {
        "main_budget": 1000,
        "runs": runs,
        "timing": {"rule": "fastest", "against": ["adv_lib.ddn"], "budget": 1000},
    }
    return {
        "meta": {
            "budget": 1000,
            "budgets": [250, 1000],
            "samples": 4,
            "device": "cpu",
            "threads": 1,
            "versions": {},
            "started": "2026-11-30",
            "command": "python bench/image_bench.py",
        },
        "models": {"m1": {"name": "m1", "role": "tuning", "norms": {"l0": norm_block}}},
    }


def test_headline_from_a_synthetic_report() -> None:
    report = _synthetic_report()
    (h,) = image_report.headline_rows(report)
    assert h["model"] == "m1" and h["norm"] == "l0"
    assert h["mmargin_main"] == pytest.approx(0.995)
    assert h["mmargin_low"] == pytest.approx(0.97)
    assert h["best_peer"] == "adv_lib ALMA"
    assert h["best_peer_optimality"] == pytest.approx(0.98)
    assert h["timed_against"] == "adv_lib DDN"
    assert h["paired_ratio"] == pytest.approx(0.85)
    text = image_report.markdown(report)
    line = "| m1 | L0 (pixels) | 0.995 | adv_lib ALMA 0.980 | 0.970 | 0.85 (adv_lib DDN) |"
    assert f"{line} – |" in text  # no matched-quality timing in this report
    rows = report["models"]["m1"]["norms"]["l0"]["runs"]["1000"]
    rows[2]["matched_timing"] = {"mmargin_budget": 250, "median_ratio": 0.31}
    assert f"{line} 0.31 (@250) |" in image_report.markdown(report)
    # the budget curve: one line per method, its pooled optimality at each budget
    assert "| adv_lib DDN | 0.900 | 0.950 |" in text
    assert "| adv_lib ALMA | – | 0.980 |" in text


def test_an_old_one_model_report_still_renders() -> None:
    new = _synthetic_report()
    rows = new["models"]["m1"]["norms"]["l0"]["runs"]["1000"]
    old = {
        "meta": {**new["meta"], "model": "m1"},
        "norms": {"l0": {"methods": rows, "best_distances": None}},
    }
    del old["meta"]["budgets"]
    restored = image_report.restore_report(old)
    (h,) = image_report.headline_rows(restored)
    assert h["mmargin_main"] == pytest.approx(0.995) and h["mmargin_low"] is None
    assert h["timed_against"] == "adv_lib DDN"  # the only row with a paired timing
    assert "At 1000 passes:" in image_report.markdown(restored)


# ----------------------------------------------------------------------- command line
def test_model_and_budget_aliases() -> None:
    args = image_bench._parse(["--model", "mnist_cnn", "--budget", "300"])
    assert args.models == ["mnist_cnn"] and args.budgets == [300] and args.main_budget == 300
    args = image_bench._parse(["--budgets", "500", "100"])
    assert args.models is None and args.budgets == [100, 500] and args.main_budget == 500
    assert image_bench._parse([]).budgets == [100, 250, 500, 1000]
    with pytest.raises(SystemExit):
        image_bench._parse(["--model", "a", "--models", "b"])


def test_default_models_are_the_evaluation_sets_mnist_models() -> None:
    import zoo

    models = image_bench.default_models()
    assert models and all(zoo.MEMBERS[n].role == "evaluation" for n in models)
    assert all(zoo.MEMBERS[n].data == "mnist" for n in models)
    assert "eval_digits_mlp" not in models and "mnist_cnn" in image_bench.mnist_models()
    assert "digits_mlp" not in image_bench.mnist_models()


def test_unknown_model_is_one_clear_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert image_bench.main(["--model", "eval_digits_mlp", "--out", "/nonexistent/x.json"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not an MNIST model" in err


def test_missing_weights_stop_before_any_run(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import zoo

    def missing(name: str) -> torch.nn.Module:
        raise FileNotFoundError(f"bench/zoo/{name}.pt is missing")

    monkeypatch.setattr(zoo, "load", missing)
    assert image_bench.main(["--model", "mnist_cnn", "--out", "/nonexistent/x.json"]) == 2
    assert capsys.readouterr().err == "image_bench: bench/zoo/mnist_cnn.pt is missing\n"


def test_scores_that_round_to_zero_print_without_a_sign() -> None:
    assert image_report._fmt(-1e-17, ".3f") == "0.000"
    assert image_report._fmt(-0.0004, ".3f") == "0.000"
    assert image_report._fmt(-0.01, ".3f") == "-0.010"  # a real negative score stays
    assert image_report._fmt(math.inf, ".3f") == "∞" and image_report._fmt(None, ".3f") == "–"


def test_combine_runs_of_single_models(tmp_path: Path) -> None:
    a, b = _synthetic_report(), _synthetic_report()
    b["models"] = {"m2": b["models"].pop("m1")}
    a["meta"].update(command="run a", total_seconds=10.0)
    b["meta"].update(command="run b", total_seconds=5.0)
    for name, report in (("a", a), ("b", b)):
        image_report.write(report, tmp_path / f"{name}.json")
    out = tmp_path / "all.json"
    argv = ["--combine", str(tmp_path / "a.json"), str(tmp_path / "b.json"), "--out", str(out)]
    assert image_bench.main(argv) == 0
    combined = image_report.restore_report(json.loads(out.read_text()))
    assert list(combined["models"]) == ["m1", "m2"]
    assert combined["meta"]["total_seconds"] == pytest.approx(15.0)
    assert [h["model"] for h in image_report.headline_rows(combined)] == ["m1", "m2"]
    assert "| m2 | L0 (pixels) | 0.995 |" in out.with_suffix(".md").read_text()
    # runs that do not compare, or the same model twice, are refused
    b["meta"]["budgets"] = [100, 1000]
    with pytest.raises(ValueError, match="budgets"):
        image_report.combine([a, b])
    with pytest.raises(ValueError, match="m1 norm l0 is in two runs"):
        image_report.combine([_synthetic_report(), _synthetic_report()])


def test_the_report_says_which_cpu_kernels_ran(monkeypatch: pytest.MonkeyPatch) -> None:
    import image_provenance

    monkeypatch.setenv("DNNL_MAX_CPU_ISA", "AVX2")
    monkeypatch.delenv("ATEN_CPU_CAPABILITY", raising=False)
    cpu = image_provenance.cpu_kernels()
    assert cpu["environment"]["DNNL_MAX_CPU_ISA"] == "AVX2"
    assert cpu["environment"]["ATEN_CPU_CAPABILITY"] is None
    assert cpu["torch_capability"] == torch.backends.cpu.get_cpu_capability()
    report = _synthetic_report()
    report["meta"]["cpu"] = cpu
    assert "capped by DNNL_MAX_CPU_ISA=AVX2" in image_report.markdown(report)
    # each combined run keeps its own record; a run from before the record renders without it
    b = _synthetic_report()
    b["models"] = {"m2": b["models"].pop("m1")}
    combined = image_report.combine([report, b])
    assert [part["cpu"] for part in combined["meta"]["combined_from"]] == [cpu, None]
    assert "- CPU " not in image_report.markdown(b)


def test_combine_joins_runs_of_one_model_over_other_norms() -> None:
    a, b = _synthetic_report(), _synthetic_report()
    b["models"]["m1"]["norms"] = {"l2": b["models"]["m1"]["norms"].pop("l0")}
    combined = image_report.combine([a, b])
    assert list(combined["models"]) == ["m1"]
    assert list(combined["models"]["m1"]["norms"]) == ["l2", "l0"]  # the usual order
    assert list(a["models"]["m1"]["norms"]) == ["l0"]  # the inputs are left as they were
    assert [h["norm"] for h in image_report.headline_rows(combined)] == ["l2", "l0"]


def test_combine_takes_only_the_norms_asked_of_a_run(tmp_path: Path) -> None:
    # an L2 + L0 run whose L0 was measured again: take its L2, and L0 from the new run
    both, again = _synthetic_report(), _synthetic_report()
    both["models"]["m1"]["norms"]["l2"] = copy.deepcopy(both["models"]["m1"]["norms"]["l0"])
    again["models"]["m1"]["norms"]["l0"]["runs"]["1000"][0]["optimality"] = 0.5
    for name, report in (("both", both), ("again", again)):
        image_report.write(report, tmp_path / f"{name}.json")
    out = tmp_path / "all.json"
    argv = ["--combine", f"{tmp_path / 'both.json'}:l2", str(tmp_path / "again.json"),
            "--out", str(out)]  # fmt: skip
    assert image_bench.main(argv) == 0
    combined = json.loads(out.read_text())
    norms = combined["models"]["m1"]["norms"]
    assert list(norms) == ["l2", "l0"]
    assert norms["l0"]["runs"]["1000"][0]["optimality"] == 0.5  # the new run's L0
    assert [c["norms"] for c in combined["meta"]["combined_from"]] == [["l2"], None]
    assert combined["meta"]["command"].count("(only l2 taken)") == 1
    with pytest.raises(ValueError, match="m1 has no linf"):
        image_report.combine([both], [["linf"]])
    # without the filter the norm in both runs is refused
    with pytest.raises(ValueError, match="norm l0 is in two runs"):
        image_report.combine([both, again])
    # a colon that is not followed by norms is part of the path
    assert image_bench._combine_part("runs/a:b.json") == (Path("runs/a:b.json"), None)
    assert image_bench._combine_part("a.json:l1,linf") == (Path("a.json"), ["l1", "linf"])


def test_headline_says_why_a_norm_has_no_time_ratio() -> None:
    report = _synthetic_report()
    timing = report["models"]["m1"]["norms"]["l0"]["timing"]
    rows = report["models"]["m1"]["norms"]["l0"]["runs"]["1000"]
    del rows[2]["paired_timing"]  # chosen, but --timing-repeats 0
    assert "| 0.970 | – (not timed) |" in image_report.markdown(report)
    timing["against"] = []  # no peer reached 0.9
    assert "| 0.970 | – (no peer ≥ 0.9) |" in image_report.markdown(report)


def test_markdown_only_rerenders_and_refuses_a_missing_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "r.json"
    image_report.write(_synthetic_report(), out)
    out.with_suffix(".md").unlink()
    assert image_bench.main(["--markdown-only", "--out", str(out)]) == 0
    assert "| m1 | L0 (pixels) | 0.995 |" in out.with_suffix(".md").read_text()
    assert image_bench.main(["--markdown-only", "--out", str(tmp_path / "none.json")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot read" in err
