import os
import pickle
import stat

import pytest
import torch

from utils import checkpoint as ckpt
from utils.errors import CheckpointError


def state(value):
    return {"model": {"w": torch.full((3,), float(value))}, "state": {"step": value}}


def test_newest_valid_checkpoint_is_chosen_by_step_number_and_corrupt_ones_are_passed_over(tmp_path):
    for step in (2, 9, 10):
        ckpt.write_step_checkpoint(state(step), tmp_path, step, keep_last=5, is_best=False)
    assert [s for s, _ in ckpt.step_checkpoints(tmp_path)] == [2, 9, 10]  # not "10" < "2" < "9"
    assert ckpt.load_newest_valid(tmp_path)[0]["state"]["step"] == 10
    data = (tmp_path / "step_10.ckpt").read_bytes()
    (tmp_path / "step_10.ckpt").write_bytes(data[: len(data) // 2])  # truncated
    loaded, path = ckpt.load_newest_valid(tmp_path)
    assert path.name == "step_9.ckpt" and loaded["state"]["step"] == 9


def test_only_the_last_k_step_checkpoints_are_kept_and_best_and_last_point_to_the_right_step(tmp_path):
    for step in (1, 2, 3, 4):
        ckpt.write_step_checkpoint(state(step), tmp_path, step, keep_last=2, is_best=step == 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.ckpt", "last.ckpt", "step_3.ckpt", "step_4.ckpt"]
    assert ckpt.load_checkpoint(tmp_path / "best.ckpt")["state"]["step"] == 2
    assert ckpt.load_checkpoint(tmp_path / "last.ckpt")["state"]["step"] == 4


def test_a_failure_while_writing_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    ckpt.save_atomic(state(1), path)

    def disk_full(obj, f):
        f.write(b"PK partial bytes")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(OSError):
        ckpt.save_atomic(state(2), path)
    assert ckpt.load_checkpoint(path)["state"]["step"] == 1
    assert os.listdir(tmp_path) == ["last.ckpt"]  # no temporary file left behind


class RunsCode:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_a_checkpoint_carrying_pickled_code_is_refused_and_the_code_never_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with open("evil.ckpt", "wb") as f:
        pickle.dump({"model": RunsCode()}, f)
    torch.save({"model": RunsCode()}, "evil_zip.ckpt")
    for name in ("evil.ckpt", "evil_zip.ckpt"):
        with pytest.raises(CheckpointError, match=f"{name} cannot be loaded safely"):
            ckpt.load_checkpoint(name)
    assert not (tmp_path / "pwned").exists()


def test_atomic_write_syncs_the_file_and_its_folder_and_replaces_the_old_content(tmp_path, monkeypatch):
    path = tmp_path / "sub" / "results.jsonl"
    ckpt.atomic_write(path, lambda f: f.write(b"old\n"))
    synced, real_fsync = [], os.fsync

    def fsync(fd):
        synced.append(stat.S_ISDIR(os.fstat(fd).st_mode))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    ckpt.atomic_write(path, lambda f: f.write(b"new\n"))
    assert path.read_bytes() == b"new\n" and os.listdir(path.parent) == ["results.jsonl"]
    assert synced == [False, True]  # the temporary file, then the folder that holds the rename


def test_resuming_deletes_temporary_files_a_killed_writer_left_and_nothing_else(tmp_path):
    ckpt.write_step_checkpoint(state(1), tmp_path, 1, keep_last=2, is_best=False)
    orphans = [".step_2.ckpt.4242.tmp", ".last.ckpt.4242.tmp"]
    others = ["notes.tmp", ".step_2.ckpt.tmp", "step_2.ckpt.4242.tmp"]
    for name in orphans + others:
        (tmp_path / name).write_bytes(b"PK partial")
    assert ckpt.load_newest_valid(tmp_path)[0]["state"]["step"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(others + ["last.ckpt", "step_1.ckpt"])
