"""Storage faults: a write that fails (file size limit, an exception mid-write) and damaged checkpoints on resume.

A full disk is simulated with RLIMIT_FSIZE: the kernel then fails writes past the limit with EFBIG
(Python ignores SIGXFSZ), the same path through our code as ENOSPC.
"""
from __future__ import annotations

import logging
import os
import resource
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from conftest import EMA, ROOT, assert_identical, entry_command, grid_opts, run
from utils import checkpoint as ckpt
from utils.errors import CheckpointError


def state(step: int) -> dict:
    return {"model": {"w": torch.full((4096,), float(step))}, "state": {"step": step}}


def contents(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.fixture
def two_checkpoints(tmp_path) -> Path:
    for step in (2, 4):
        ckpt.write_step_checkpoint(state(step), tmp_path, step, keep_last=2, is_best=step == 2)
    return tmp_path


def test_a_write_past_the_file_size_limit_is_one_error_and_the_previous_checkpoints_stay(two_checkpoints):
    before = contents(two_checkpoints)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (len(before["step_4.ckpt"]) // 2, hard))
    try:
        with pytest.raises(CheckpointError) as err:
            ckpt.write_step_checkpoint(state(6), two_checkpoints, 6, keep_last=2, is_best=True)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert str(err.value) == (f"checkpoint {two_checkpoints / 'step_6.ckpt'} could not be written ([Errno 27] "
                              f"File too large); the checkpoints already in {two_checkpoints} are intact")
    assert contents(two_checkpoints) == before  # no temporary file either
    assert ckpt.load_newest_valid(two_checkpoints)[0]["state"]["step"] == 4


def test_an_exception_in_the_middle_of_a_write_leaves_the_previous_checkpoints(two_checkpoints):
    before = contents(two_checkpoints)
    unpicklable = {"model": {"w": torch.zeros(4096)}, "state": {"step": 6, "hook": lambda: None}}
    with pytest.raises(Exception, match="lambda"):  # torch.save has written the tensors when it meets the lambda
        ckpt.write_step_checkpoint(unpicklable, two_checkpoints, 6, keep_last=2, is_best=True)
    assert contents(two_checkpoints) == before


def flip_byte_in_tensor_data(data: bytes) -> bytes:
    at = data.index(torch.full((4096,), 4.0).numpy().tobytes()[:64]) + 1000
    return data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1:]


DAMAGE = {
    "truncated": lambda data: data[: len(data) // 2],
    "empty": lambda data: b"",
    "one flipped bit": flip_byte_in_tensor_data,  # torch.load alone would load a wrong weight
    "garbage": lambda data: os.urandom(len(data)),
    "not a checkpoint": lambda data: b"these are not the weights you are looking for\n",
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_damaged_newest_checkpoint_is_reported_and_the_previous_one_used(two_checkpoints, damage, caplog):
    newest = two_checkpoints / "step_4.ckpt"
    newest.write_bytes(DAMAGE[damage](newest.read_bytes()))
    with caplog.at_level(logging.WARNING, logger="utils.checkpoint"):
        loaded, path = ckpt.load_newest_valid(two_checkpoints)
    assert path.name == "step_2.ckpt" and loaded["state"]["step"] == 2
    [warning] = [r.getMessage() for r in caplog.records]
    assert warning.startswith(f"skipping unusable checkpoint: checkpoint {newest} ") and "\n" not in warning


def test_a_checkpoint_written_without_crc32_still_loads(tmp_path):
    torch.serialization.set_crc32_options(False)
    try:
        ckpt.save_atomic(state(1), tmp_path / "no_crc.ckpt")
    finally:
        torch.serialization.set_crc32_options(True)
    assert ckpt.load_checkpoint(tmp_path / "no_crc.ckpt")["state"]["step"] == 1


def test_checkpoints_newer_than_the_resumed_one_never_get_the_new_ones_pruned(tmp_path):
    # A run resumed past unusable step_6 and step_8: keep-last-2 must not count them and delete step_2.
    for stale in (6, 8):
        (tmp_path / f"step_{stale}.ckpt").write_bytes(b"truncated")
    ckpt.write_step_checkpoint(state(2), tmp_path, 2, keep_last=2, is_best=False)
    assert ckpt.load_newest_valid(tmp_path)[1].name == "step_2.ckpt"
    ckpt.write_step_checkpoint(state(4), tmp_path, 4, keep_last=2, is_best=False)
    ckpt.write_step_checkpoint(state(6), tmp_path, 6, keep_last=2, is_best=False)
    assert sorted(p.name for p in tmp_path.glob("step_*")) == ["step_4.ckpt", "step_6.ckpt", "step_8.ckpt"]


def copy_run(undisturbed_run: Path, to: Path) -> Path:
    shutil.copytree(undisturbed_run / "ckpts", to / "ckpts")  # copies: last.ckpt is no longer a link
    return to


def test_a_run_resumes_past_a_corrupt_newest_checkpoint_and_ends_bit_identical(undisturbed_run, grid_corpus,
                                                                                tmp_path):
    model_dir = copy_run(undisturbed_run, tmp_path / "corrupt")
    *_, (before, _), (newest, newest_path) = ckpt.step_checkpoints(model_dir / "ckpts")
    data = bytearray(newest_path.read_bytes())
    data[len(data) // 2] ^= 0x01
    newest_path.write_bytes(data)
    result = run(entry_command("training.py", grid_opts(grid_corpus, model_dir, **EMA)))
    assert f"skipping unusable checkpoint: checkpoint {newest_path} cannot be loaded safely: Bad CRC-32" \
        in result.stdout
    assert f"resumed from {model_dir / 'ckpts' / f'step_{before}.ckpt'} at step {before}" in result.stdout
    for part in ("model", "ema", "optimizer"):
        assert_identical(ckpt.load_checkpoint(undisturbed_run / "ckpts" / "last.ckpt")[part],
                         ckpt.load_checkpoint(model_dir / "ckpts" / "last.ckpt")[part], part)


def test_a_real_run_that_cannot_write_its_checkpoint_stops_with_one_line_and_keeps_the_old_ones(
        undisturbed_run, grid_corpus, tmp_path):
    model_dir = copy_run(undisturbed_run, tmp_path / "full")
    before = contents(model_dir / "ckpts")
    limit = len(before["last.ckpt"]) // 2
    # one more epoch: the run resumes at its last step and fails at its next checkpoint
    cmd = entry_command("training.py", grid_opts(grid_corpus, model_dir, **EMA, **{"training.total_epoch": 3}))
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=300,
                            env={**os.environ, "OMP_NUM_THREADS": "1"},
                            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit)))
    assert result.returncode == 2, result.stderr[-2000:]
    last_step = ckpt.step_checkpoints(model_dir / "ckpts")[-1][0]
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: checkpoint {model_dir / 'ckpts' / f'step_{last_step + 2}.ckpt'} could not be written "
        f"([Errno 27] File too large); the checkpoints already in {model_dir / 'ckpts'} are intact")
    assert contents(model_dir / "ckpts") == before
