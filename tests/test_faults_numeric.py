"""Numerical faults: NaN and Inf losses and gradients injected at given steps of real training runs.

The faults come from tests/fault_injection.py, which runs training.py with a hook on the model's loss.
"""
from __future__ import annotations

from pathlib import Path

import torch

from conftest import entry_command, grid_opts, run
from utils.checkpoint import load_checkpoint

INJECT = "tests/fault_injection.py"


def at_step(model_dir: Path, step: int) -> dict:
    return load_checkpoint(model_dir / "ckpts" / f"step_{step}.ckpt")


def same_tensors(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_nonfinite_losses_and_gradients_at_given_steps_are_skipped_counted_and_change_nothing(
        grid_corpus, tmp_path, monkeypatch):
    # rank 1 alone sees a NaN loss at step 3: both ranks must skip it together, or DDP would hang
    monkeypatch.setenv("VLR_FAULT_INJECT", "nan@3:1,inf@5,nan_grad@6:0")
    model_dir = tmp_path / "faults"
    opts = grid_opts(grid_corpus, model_dir, **{"training.batch_size": 2, "training.total_epoch": 1,
                                                "training.validation.freq": 1, "training.keep_last_ckpts": 20})
    result = run(entry_command(INJECT, opts, nproc=2))
    for step in (3, 5, 6):
        assert f"step {step} skipped: non-finite loss" in result.stdout
    assert "step 6: non-finite gradients from a finite loss" in result.stdout
    for skipped, before in ((3, 2), (5, 4), (6, 4)):
        assert same_tensors(at_step(model_dir, skipped)["model"], at_step(model_dir, before)["model"]), skipped
    final = load_checkpoint(model_dir / "ckpts" / "last.ckpt")
    assert final["state"]["skipped_steps"] == 3 and final["state"]["nonfinite_run"] == 0
    assert not same_tensors(final["model"], at_step(model_dir, 6)["model"])  # training went on
    assert all(torch.isfinite(w).all() for w in final["model"].values())


def test_a_run_of_nonfinite_losses_stops_with_one_line_and_a_checkpoint_that_resumes(grid_corpus, tmp_path,
                                                                                      monkeypatch):
    model_dir = tmp_path / "stopped"
    opts = grid_opts(grid_corpus, model_dir, **{"training.max_nonfinite_steps": 3, "training.total_epoch": 1})
    monkeypatch.setenv("VLR_FAULT_INJECT", "nan@3,inf@4,nan@5")
    stopped = run(entry_command(INJECT, opts), check=False)
    assert stopped.returncode == 2
    assert stopped.stderr.strip().splitlines()[-1] == (
        "error: stopping: 3 steps in a row had a non-finite loss or no usable samples "
        f"(training.max_nonfinite_steps); the last good checkpoint is in {model_dir / 'ckpts'}")
    last = load_checkpoint(model_dir / "ckpts" / "last.ckpt")
    assert last["state"]["step"] == 4 and last["state"]["skipped_steps"] == 2
    assert same_tensors(last["model"], at_step(model_dir, 2)["model"])  # the weights from before the run of NaNs
    monkeypatch.delenv("VLR_FAULT_INJECT")
    resumed = run(entry_command("training.py", opts))
    assert f"resumed from {model_dir / 'ckpts' / 'step_4.ckpt'} at step 4" in resumed.stdout
    assert load_checkpoint(model_dir / "ckpts" / "last.ckpt")["state"]["step"] == 8
