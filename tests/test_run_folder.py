"""Run folders: checked before any search, refused rather than overwritten, unique
artefact names, journal reads that survive a torn last line."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from mmargin.durable.folder import claim, task_hash
from mmargin.durable.journal import Journal, read_rows
from mmargin.durable.names import artifact_stem
from mmargin.store import RunFolderError


def test_missing_folder_is_created_and_claimed_fresh(tmp_path: Path) -> None:
    found = claim(tmp_path / "a" / "b", "h1")
    assert found.state == "fresh" and (tmp_path / "a" / "b" / "run.json").is_file()


def test_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    with pytest.raises(RunFolderError, match="not a folder"):
        claim(tmp_path / "f", "h1")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_an_unwritable_folder_is_refused(tmp_path: Path) -> None:
    tmp_path.chmod(0o500)
    try:
        with pytest.raises(RunFolderError, match="cannot write"):
            claim(tmp_path / "x", "h1")
    finally:
        tmp_path.chmod(0o700)


def test_same_task_needs_resume_other_task_needs_force(tmp_path: Path) -> None:
    first = claim(tmp_path, "h1")
    (tmp_path / "results.jsonl").write_text("")
    with pytest.raises(RunFolderError, match="unfinished run"):
        claim(tmp_path, "h1")
    assert claim(tmp_path, "h1", resume=True).state == "resume"
    with pytest.raises(RunFolderError, match="different task"):
        claim(tmp_path, "h2", resume=True)
    first.mark("complete", files=["results.jsonl", "extra"])
    (tmp_path / "extra").mkdir()
    (tmp_path / "adversarials.npz").write_bytes(b"stale")
    with pytest.raises(RunFolderError, match="finished run"):
        claim(tmp_path, "h1")
    assert claim(tmp_path, "h1", resume=True).state == "complete"
    again = claim(tmp_path, "h2", force=True)
    assert again.state == "fresh"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.json"]  # nothing stale left


def test_foreign_files_are_refused_and_kept_with_force(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(RunFolderError, match="other files"):
        claim(tmp_path, "h1")
    found = claim(tmp_path, "h1", force=True)
    assert (tmp_path / "notes.txt").read_text() == "mine"
    assert "notes.txt" not in found.new_files()


def test_task_hash_ignores_the_output_folder_only() -> None:
    record = {"task": {"name": "t", "out": "a", "seed": 0}, "versions": {"torch": "2"}}
    moved = {"task": {"name": "t", "out": "b", "seed": 0}, "versions": {"torch": "2"}}
    reseeded = {"task": {"name": "t", "out": "a", "seed": 1}, "versions": {"torch": "2"}}
    upgraded = {"task": {"name": "t", "out": "a", "seed": 0}, "versions": {"torch": "3"}}
    assert task_hash(record) == task_hash(moved)
    assert len({task_hash(record), task_hash(reseeded), task_hash(upgraded)}) == 3


def test_artifact_stems_are_unique_and_safe() -> None:
    ids = ["a b", "a_b", "A_b", "x/../y", "x_.._y", "", "é"]
    stems = [artifact_stem(s) for s in ids]
    assert len(set(stems)) == len(ids)
    assert len({s.lower() for s in stems}) == len(ids)  # case-insensitive disks too
    assert all(s and "/" not in s and not s.startswith(".") for s in stems)


def test_torn_last_line_is_skipped_and_cut_before_appending(tmp_path: Path) -> None:
    from mmargin.results import Status, result_record

    def record(sample: str) -> object:
        return result_record(sample, 1, Status.ERROR, modality="m", space="s", distance="d")

    path = tmp_path / "results.jsonl"
    good = json.dumps(record("0").to_json())  # type: ignore[attr-defined]
    path.write_text(good + "\n" + good[:17])
    assert [r["sample"] for r in read_rows(path)] == ["0"]
    journal = Journal(tmp_path)
    journal.append(1, [record("0"), record("1")])  # type: ignore[list-item]
    assert [r["sample"] for r in read_rows(path)] == ["0", "1"]  # no duplicate, no torn line
    assert path.read_text().count("\n") == 2


def test_progress_bar_moves_within_a_batch_and_snaps_to_whole_samples() -> None:
    import io

    from tqdm import tqdm

    from mmargin.durable.progress import BarProgress

    bar = tqdm(total=8, file=io.StringIO())
    tick = BarProgress(bar, budget=10, batch_size=4)
    tick.step(4)  # one forward pass over a batch of 4: 4 rows of at most 10 passes each
    assert 0 < bar.n < 4
    for _ in range(50):
        tick.step(4)
    assert bar.n <= 0.95 * 4 + 1e-9  # never claims the batch before it is finished
    tick(4)
    assert bar.n == 4
    tick.step(4)
    tick(4)
    assert bar.n == 8


def test_cli_takes_the_run_options() -> None:
    from mmargin.cli import build_parser

    args = build_parser().parse_args(
        ["run", "t.toml", "--resume", "--force", "--executor", "ray", "--address", "h:6379",
         "--workers", "3", "--gpus-per-worker", "0.5"]
    )  # fmt: skip
    assert (args.resume, args.force, args.executor, args.address, args.workers) == (
        True, True, "ray", "h:6379", 3)  # fmt: skip
    assert args.gpus_per_worker == 0.5


def test_folder_differences_see_records_duplicates_and_adversarial_bits(tmp_path: Path) -> None:
    import numpy as np

    from mmargin.durable.compare import differences

    def folder(name: str, rows: list[dict[str, object]], adv: np.ndarray) -> Path:
        out = tmp_path / name
        out.mkdir()
        (out / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        np.savez(out / "adversarials.npz", a=adv)
        return out

    row = {"sample": "a", "margin": 0.5, "seconds": 1.0}
    adv = np.array([0.25, 0.5], dtype=np.float32)
    base = folder("base", [row], adv)
    assert differences(base, folder("slower", [{**row, "seconds": 9.0}], adv)) == []
    assert differences(base, folder("margin", [{**row, "margin": 0.5000001}], adv))
    assert differences(base, folder("twice", [row, row], adv))
    assert differences(base, folder("bits", [row], np.nextafter(adv, 1)))


def test_evaluate_reports_progress_by_callback_and_bar(capsys: pytest.CaptureFixture[str]) -> None:
    import numpy as np
    import torch

    import mmargin

    torch.manual_seed(0)
    net = torch.nn.Linear(4, 3)
    x = np.random.default_rng(0).random((10, 4), dtype=np.float32)
    labels = net(torch.as_tensor(x)).argmax(dim=1).numpy()
    seen: list[int] = []
    mmargin.evaluate(net, x, labels, budget=20, batch_size=4, progress=seen.append)
    assert sum(seen) == 10 and len(seen) == 3  # one call per batch of 4, 4, 2
    mmargin.evaluate(net, x, labels, budget=20, batch_size=4, progress=True)
    assert "10/10" in capsys.readouterr().err
