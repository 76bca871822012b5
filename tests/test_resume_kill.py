"""A real ``mmargin run`` killed with SIGKILL at random moments and resumed each time ends
in the same folder as an uninterrupted run: no sample lost, none duplicated, the same
margins and adversarials to the bit (only the timing field ``seconds`` may differ)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from run_fixtures import TASK, assert_same_folder  # the tests folder is on sys.path

from mmargin.api import run_task


def _command(task: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "mmargin.cli", "run", str(task), "--out", str(out),
            "--quiet", *extra]  # fmt: skip


def _lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.is_file() else 0


@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume_gives_the_uninterrupted_folder(
    tmp_path: Path,
) -> None:
    task = tmp_path / "task.toml"
    task.write_text(TASK.replace("budget = 40", "budget = 160"))  # slow enough to be killed
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    run_task(task, out=whole)  # the uninterrupted run, in this process
    rng = random.Random(7)
    kills = 0
    for _ in range(3):
        proc = subprocess.Popen(_command(task, killed, "--resume"), env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        wanted = _lines(killed / "results.jsonl") + rng.randint(1, 8)
        while proc.poll() is None and _lines(killed / "results.jsonl") < wanted:
            time.sleep(0.005)
        time.sleep(rng.uniform(0.0, 0.1))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()  # a kill may also land while a finished run writes its final files
    assert kills >= 2, "the run finished before it could be killed: make it longer"
    assert _lines(killed / "results.jsonl") > 0  # the killed runs kept what they finished
    last = [c for c in _command(task, killed, "--resume") if c != "--quiet"]
    done = subprocess.run(last, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""  # no progress bar when stderr is not a terminal
    assert_same_folder(whole, killed)
    refused = subprocess.run(_command(task, killed), env=env, capture_output=True, text=True)
    assert refused.returncode == 2 and "finished run" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
