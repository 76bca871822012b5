"""bench/gpu_bench.py: the pooled scoring of device rows against stored CPU rows, one
end-to-end run on the CPU, and the one-line errors for input that dooms the run."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gpu_bench
from metrics import attackbench_optimality, per_sample_best

STORED = {
    100: {"mmargin": np.array([1.0, 2.0, 3.0, math.inf]), "peer": np.array([1.1, 1.8, 3.3, 4.0])},
    1000: {"mmargin": np.array([0.9, 1.9, 2.8, 3.9]), "peer": np.array([1.0, 1.7, 3.0, 4.0])},
}


def test_a_device_row_equal_to_the_cpu_row_scores_the_same() -> None:
    device = {b: rows["mmargin"].copy() for b, rows in STORED.items()}
    table = gpu_bench.score(STORED, device, {})
    for row in table:
        assert row["device_optimality"] == pytest.approx(row["cpu_optimality"], abs=1e-12)
        assert row["samples_within_1e-3"] == 1.0
        assert row["fresh_cpu_optimality"] is None
    # the pool is every stored row: sample 1's best is the peer's 1.7, not mmargin's
    pooled = per_sample_best([d for rows in STORED.values() for d in rows.values()])
    expected = attackbench_optimality(STORED[1000]["mmargin"], pooled)
    assert table[1]["cpu_optimality"] == pytest.approx(expected)
    assert (table[1]["device_failures"], table[1]["cpu_failures"]) == (0, 0)
    assert (table[0]["device_failures"], table[0]["cpu_failures"]) == (1, 1)


def test_a_better_device_row_joins_the_pool_and_a_fresh_row_is_the_reference() -> None:
    better = STORED[1000]["mmargin"] * 0.5  # below every stored row: now the pooled best
    fresh = {1000: STORED[1000]["mmargin"] * 1.0005}
    (row,) = gpu_bench.score(STORED, {1000: better}, fresh)
    assert row["device_optimality"] == pytest.approx(1.0)
    assert row["cpu_optimality"] < 0.75
    assert row["fresh_cpu_optimality"] < row["cpu_optimality"]  # 0.05 % above the stored
    # the comparison is to the fresh CPU row: every sample is 50 % off it
    assert row["samples_within_1e-3"] == 0.0
    assert row["max_relative_difference"] == pytest.approx(1 - 0.5 / 1.0005)


def test_one_run_on_the_cpu_end_to_end(tmp_path: Path) -> None:
    """``cpu:0`` as the device: the fresh CPU row runs beside it, and the same code on the
    same CPU must give the same flips, so the two rows score alike."""
    out = tmp_path / "gpu"
    argv = ["--device", "cpu:0", "--models", "eval_mlp", "--norms", "l2", "--budgets", "60",
            "--cpu-budgets", "60", "--samples", "6", "--throughput-sizes",
            "--out", str(out)]  # fmt: skip
    assert gpu_bench.main(argv) == 0
    report = json.loads(out.with_suffix(".json").read_text())
    (row,) = report["quality"]["eval_mlp"]["l2"]
    assert report["samples"] == 6 and report["budgets"] == [60]
    assert 0 < row["passes_per_sample"] <= 60 and row["cpu_passes_per_sample"] <= 60
    assert row["checks"]["not_adversarial"] == 0 and row["device_failures"] == 0
    assert 0.0 < row["device_optimality"] <= 1.0
    assert row["fresh_cpu_optimality"] == row["device_optimality"]
    assert row["samples_within_1e-3"] == 1.0 and row["max_relative_difference"] == 0.0
    # no stored row at 60 passes
    assert row["cpu_optimality"] is None
    text = out.with_suffix(".md").read_text()
    assert f"| eval_mlp | l2 | 60 | – | {row['device_optimality']:.3f} |" in text
    assert "Samples per second: skipped (not asked for)." in text
    assert report["command"] == "bash bench/run_gpu.sh " + " ".join(argv)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--device", "cpu", "--models", "nope"], "models not in"),
        (["--device", "gpu9"], "expected cpu, cuda or cuda:N"),
        (["--device", "cpu", "--stored", "/nonexistent/image.json"], "No such file"),
    ],
)
def test_input_that_dooms_the_run_stops_it_with_one_line(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert gpu_bench.main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error without CUDA")
def test_cuda_without_a_gpu_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert gpu_bench.main(["--device", "cuda"]) == 2
    assert "no CUDA GPU" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the report without CUDA")
def test_throughput_without_a_gpu_is_reported_as_skipped(tmp_path: Path) -> None:
    out = tmp_path / "gpu"
    argv = ["--device", "cpu", "--models", "eval_mlp", "--norms", "l2", "--budgets", "20",
            "--samples", "2", "--throughput-sizes", "16", "--out", str(out)]  # fmt: skip
    assert gpu_bench.main(argv) == 0
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["throughput"] == {"skipped": "no CUDA GPU on this machine"}
    assert "Samples per second: skipped (no CUDA GPU on this machine)." in (
        out.with_suffix(".md").read_text()
    )


def test_a_run_that_fails_is_reported_and_the_others_stand(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The device path has not run on a GPU here: one budget's crash must not lose the
    others' figures."""
    real = gpu_bench.run_on_device

    def flaky(name: str, norm: str, budget: int, *rest: object) -> object:
        if budget == 30:
            raise RuntimeError("CUDA error: an illegal memory access | was encountered")
        return real(name, norm, budget, *rest)  # type: ignore[arg-type]

    monkeypatch.setattr(gpu_bench, "run_on_device", flaky)
    out = tmp_path / "gpu"
    argv = ["--device", "cpu", "--models", "eval_mlp", "--norms", "l2", "--budgets", "20",
            "30", "--samples", "3", "--throughput-sizes", "--out", str(out)]  # fmt: skip
    assert gpu_bench.main(argv) == 0
    ok, failed = json.loads(out.with_suffix(".json").read_text())["quality"]["eval_mlp"]["l2"]
    assert ok["budget"] == 20 and 0 < ok["device_optimality"] <= 1
    assert failed["budget"] == 30 and "device_optimality" not in failed
    assert failed["error"].startswith("RuntimeError: CUDA error: an illegal memory access")
    text = out.with_suffix(".md").read_text()
    assert "| eval_mlp | l2 | 30 | – | – | failed |" in text
    assert "- eval_mlp l2 @30 cpu: RuntimeError: CUDA error" in text
