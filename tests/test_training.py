"""The training loop end to end, in real processes: single, torchrun DDP (gloo), two nodes, resume."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
import yaml

from conftest import DEMO_CONFIG, EMA, ROOT, assert_identical, entry_command, free_port, grid_opts, run
from utils.checkpoint import load_checkpoint, load_newest_valid
from utils.config import load_config


def video_path(corpus: Path, entry: str) -> Path:
    """Where the demo config looks for the video of split-list entry `speaker/id`."""
    speaker, vid = entry.split("/")
    return corpus / yaml.safe_load(DEMO_CONFIG.read_text())["data"]["video_pattern"].format(speaker=speaker, id=vid)


def final_weights(model_dir: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(model_dir / "ckpts" / "last.ckpt")["model"]


@pytest.fixture(scope="module")
def trained(undisturbed_run) -> Path:
    return undisturbed_run


def test_a_run_writes_its_config_checkpoints_log_and_tensorboard_events(trained):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = load_config(trained / "config.yaml")  # the resolved config is itself a valid experiment file
    assert cfg["training"]["model_dir"] == str(trained)
    payload = load_checkpoint(trained / "ckpts" / "last.ckpt")
    assert {"model", "optimizer", "scheduler", "scaler", "ema", "state", "rng", "config", "vocab"} <= set(payload)
    assert payload["state"]["step"] == int(sorted((trained / "ckpts").glob("step_*.ckpt"))[-1].stem.split("_")[1])
    assert (trained / "ckpts" / "best.ckpt").exists()
    assert "validation at step 2" in (trained / "train.log").read_text()
    events = EventAccumulator(str(trained / "tensorboard"))
    events.Reload()
    tags = events.Tags()["scalars"]
    assert {"train/loss", "train/lr/default", "train/samples_per_s", "dev/cer", "dev/wer"} <= set(tags)
    assert len(events.Scalars("train/loss")) == payload["state"]["step"]


def test_prediction_scores_dev_and_test_and_distributed_evaluation_is_exact(trained, grid_corpus, tmp_path):
    odd = tmp_path / "odd.txt"  # 5 samples: does not divide by 2 processes
    odd.write_text("\n".join((grid_corpus / "train.txt").read_text().split()[:5]) + "\n")
    opts = grid_opts(grid_corpus, trained, **EMA, **{"data.test": odd})
    run(entry_command("prediction.py", opts + ["--save_subdir", "single"]))
    run(entry_command("prediction.py", opts + ["--save_subdir", "two"], nproc=2))
    for split, listing in (("dev", grid_corpus / "dev.txt"), ("test", odd)):
        names = listing.read_text().split()
        single = (trained / "single" / split / "results.jsonl").read_text().splitlines()
        two = (trained / "two" / split / "results.jsonl").read_text().splitlines()
        assert single == two
        assert [json.loads(r)["name"] for r in two] == names  # each sample exactly once, in order
        summary_single = json.loads((trained / "single" / split / "summary.json").read_text())
        summary_two = json.loads((trained / "two" / split / "summary.json").read_text())
        assert summary_single["cer"] == summary_two["cer"] and summary_two["num_samples"] == len(names)
        assert summary_two["weights"] == "ema"  # evaluated with the weights validation used


def test_a_run_killed_with_sigkill_and_relaunched_ends_bit_identical(trained, grid_corpus, tmp_path):
    model_dir = tmp_path / "killed"
    cmd = entry_command("training.py", grid_opts(grid_corpus, model_dir, **EMA))
    process = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.time() + 120
    while not (model_dir / "ckpts" / "step_2.ckpt").exists() and time.time() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL
    # The newest step file, not last.ckpt: the kill may land between writing one and linking the other.
    killed_at = load_newest_valid(model_dir / "ckpts")[0]["state"]["step"]
    total = load_checkpoint(trained / "ckpts" / "last.ckpt")["state"]["step"]
    assert killed_at < total, "the run finished before it could be killed"
    result = run(cmd)
    assert f"at step {killed_at}" in result.stdout
    for part in ("model", "ema", "optimizer"):
        uninterrupted = load_checkpoint(trained / "ckpts" / "last.ckpt")[part]
        resumed = load_checkpoint(model_dir / "ckpts" / "last.ckpt")[part]
        assert_identical(uninterrupted, resumed, part)


def test_from_ckpt_continues_another_runs_checkpoint_to_the_same_end(trained, grid_corpus, tmp_path):
    start = trained / "ckpts" / "step_2.ckpt"
    if not start.exists():  # keep_last_ckpts pruned it: take the older of the two kept
        start = sorted((trained / "ckpts").glob("step_*.ckpt"), key=lambda p: int(p.stem[5:]))[0]
    model_dir = tmp_path / "continued"
    result = run(entry_command("training.py", grid_opts(grid_corpus, model_dir, **EMA,
                                                        **{"training.from_ckpt": start})))
    assert f"resumed from {start}" in result.stdout
    assert_identical(final_weights(trained), final_weights(model_dir), "model")


# Summation order differs between 1 and 2 processes, and training amplifies that round-off step by step
# (Adam most, as it divides by the gradients' RMS; large unclipped CTC gradients too). One epoch
# (8 steps) of clipped SGD at a modest rate keeps it near 1e-6, so the comparison shows the gradient
# averaging itself.
SGD = {"training.optimization.optimizer": "SGD", "training.optimization.learning_rate.default": 0.01,
       "training.total_epoch": 1, "training.clip_grad_norm": 5.0}


def test_two_processes_with_batch_b_match_one_process_with_batch_2b(grid_corpus, tmp_path):
    one = tmp_path / "one"
    run(entry_command("training.py", grid_opts(grid_corpus, one, **SGD, **{"training.batch_size": 4})))
    two = tmp_path / "two"
    run(entry_command("training.py", grid_opts(grid_corpus, two, **SGD, **{"training.batch_size": 2}), nproc=2))
    # 2 processes x batch 1 x 2 accumulated micro-batches: the same 4 samples per step
    accum = tmp_path / "accum"
    run(entry_command("training.py", grid_opts(grid_corpus, accum, **SGD, **{
        "training.batch_size": 1, "training.gradient_accumulation": 2}), nproc=2))
    reference = final_weights(one)
    for other in (two, accum):
        weights = final_weights(other)
        for key, value in reference.items():
            torch.testing.assert_close(weights[key], value, rtol=1e-5, atol=1e-5, msg=f"{other.name}: {key}")
    assert "2 processes x batch 1 x accumulation 2" in (accum / "train.log").read_text()


def test_two_torchrun_nodes_on_localhost_train_together(grid_corpus, tmp_path):
    port = free_port()
    model_dir = tmp_path / "nodes"
    opts = grid_opts(grid_corpus, model_dir, **SGD, **{"training.batch_size": 2})
    nodes = []
    for node_rank in (0, 1):
        cmd = entry_command("training.py", opts)
        script = cmd.index(str(ROOT / "training.py"))
        cmd[1:script] = ["-m", "torch.distributed.run", "--nnodes", "2", "--node_rank", str(node_rank),
                         "--nproc_per_node", "1", "--master_addr", "127.0.0.1", "--master_port", str(port)]
        nodes.append(subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                      env={**os.environ, "OMP_NUM_THREADS": "1"}))
    outputs = [node.communicate(timeout=300)[0] for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], outputs
    assert "2 processes x batch 2" in (model_dir / "train.log").read_text()
    single = tmp_path / "single"
    run(entry_command("training.py", grid_opts(grid_corpus, single, **SGD, **{"training.batch_size": 4})))
    for key, value in final_weights(single).items():
        torch.testing.assert_close(final_weights(model_dir)[key], value, rtol=1e-5, atol=1e-5)


def test_an_exploding_run_skips_non_finite_steps_then_stops_with_a_usable_checkpoint(grid_corpus, tmp_path):
    model_dir = tmp_path / "explode"
    opts = grid_opts(grid_corpus, model_dir, **{
        "training.total_epoch": 20, "training.validation.freq": 1, "training.max_nonfinite_steps": 3,
        "training.optimization.optimizer": "SGD", "training.optimization.learning_rate.default": 1e30,
        "training.optimization.warmup_epochs": 0.0})
    result = run(entry_command("training.py", opts, nproc=2), check=False)  # all ranks must agree to skip
    assert result.returncode != 0
    assert result.stderr.count("error: stopping: 3 steps in a row had a non-finite loss") == 2
    assert "skipped: non-finite loss" in result.stdout
    assert load_checkpoint(model_dir / "ckpts" / "last.ckpt")["state"]["step"] >= 1


@pytest.fixture
def damaged_corpus(grid_corpus, tmp_path) -> tuple[Path, list[str]]:
    """A copy of the corpus whose first three training videos are truncated, empty and missing."""
    import shutil

    corpus = tmp_path / "grid"
    shutil.copytree(grid_corpus, corpus)
    damaged = []
    for i, line in enumerate((corpus / "train.txt").read_text().split()[:3]):
        path = video_path(corpus, line)
        [lambda p: p.write_bytes(p.read_bytes()[:300]), lambda p: p.write_bytes(b""), Path.unlink][i](path)
        damaged.append(str(path))
    return corpus, damaged


def test_bad_videos_stop_training_naming_the_file(damaged_corpus, tmp_path):
    corpus, damaged = damaged_corpus
    opts = grid_opts(corpus, tmp_path / "bad", **{"training.shuffle": "false"})
    result = run(entry_command("training.py", opts), check=False)
    assert result.returncode == 2
    message = result.stderr.strip().splitlines()[-1]
    assert message.startswith("error: sample ") and any(path in message for path in damaged), message


def test_bad_videos_are_skipped_and_counted_when_asked(damaged_corpus, tmp_path):
    corpus, damaged = damaged_corpus
    opts = grid_opts(corpus, tmp_path / "skip", **{"data.skip_bad_samples": "true", "training.total_epoch": 1,
                                                   "training.shuffle": "false"})
    result = run(entry_command("training.py", opts))
    for path in damaged:
        assert path in result.stdout
    assert "epoch 1: 3 unreadable samples skipped" in result.stdout


def test_an_empty_batch_on_one_rank_skips_the_step_on_all_ranks_with_batchnorm(grid_corpus, tmp_path):
    # DDP's forward broadcasts BatchNorm buffers: a rank that skipped forward alone would hang the others.
    import shutil

    corpus = tmp_path / "grid"
    shutil.copytree(grid_corpus, corpus)
    video_path(corpus, (corpus / "train.txt").read_text().split()[0]).unlink()
    opts = grid_opts(corpus, tmp_path / "bn", **{
        "data.skip_bad_samples": "true", "training.shuffle": "false", "training.batch_size": 1,
        "training.total_epoch": 1, "model.LipNet.batch_norm": "true", "training.validation.unit": "epoch"})
    result = run(entry_command("training.py", opts, nproc=2), timeout=240)
    assert "step 1 skipped: non-finite loss or no usable samples" in result.stdout
    assert "epoch 1: 1 unreadable samples skipped" in result.stdout
    assert load_checkpoint(tmp_path / "bn" / "ckpts" / "last.ckpt")["state"]["skipped_steps"] == 1


def test_resuming_with_another_global_batch_is_refused_naming_both(trained, grid_corpus, tmp_path):
    import shutil

    model_dir = tmp_path / "rebatched"
    shutil.copytree(trained / "ckpts", model_dir / "ckpts")
    result = run(entry_command("training.py", grid_opts(grid_corpus, model_dir, **EMA, **{"training.batch_size": 2})),
                 check=False)
    assert result.returncode == 2
    message = result.stderr.strip().splitlines()[-1]
    assert message.startswith("error: checkpoint ") and "global batch 4" in message and "global batch 2" in message


def test_sync_batchnorm_on_cpu_processes_is_refused_before_training(grid_corpus, tmp_path):
    opts = grid_opts(grid_corpus, tmp_path / "sync", **{"training.sync_bn": "true", "training.batch_size": 2})
    result = run(entry_command("training.py", opts, nproc=2), check=False)
    assert result.returncode != 0
    assert result.stderr.count("error: training.sync_bn: torch's SyncBatchNorm runs on GPUs only") == 2
    assert not list((tmp_path / "sync").glob("ckpts/*"))
