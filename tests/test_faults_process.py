"""Process faults: SIGKILL at a random step, of a single-process run and of one rank of a torchrun job.

The steps are drawn at random on every run of the suite and named in every failure message. A killed run
must end, once relaunched (by hand, or by torchrun's --max-restarts), with the same weights, EMA and
optimizer state, bit for bit, as a run that was never disturbed.
"""
from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from pathlib import Path

from conftest import EMA, ROOT, assert_identical, entry_command, grid_opts, run
from utils.checkpoint import load_checkpoint

STEPS = 16  # grid_opts: 32 training samples, global batch 4, 2 epochs


def launch(cmd: list[str], output: Path | None = None) -> subprocess.Popen:
    """`cmd` in the background; its stdout and stderr go to `output` (to read when it fails) or nowhere."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if output is None:
        return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    with open(output, "wb") as sink:  # the child keeps its own copy of the file open
        return subprocess.Popen(cmd, cwd=ROOT, stdout=sink, stderr=subprocess.STDOUT, env=env)


def log_size(model_dir: Path) -> int:
    log = model_dir / "train.log"
    return log.stat().st_size if log.exists() else 0


def log_since(model_dir: Path, after: int) -> str:
    """What rank 0 wrote to train.log after its first `after` bytes."""
    log = model_dir / "train.log"
    return log.read_bytes()[after:].decode(errors="replace") if log.exists() else ""


def wait_for_step(model_dir: Path, step: int, process: subprocess.Popen, after: int) -> None:
    """Wait until rank 0 logs training step `step` in the part of train.log written after byte `after`."""
    line = f" step {step}/{STEPS} "
    deadline = time.monotonic() + 240  # a guard against a hung run, not a timing assertion
    while line not in log_since(model_dir, after):
        assert process.poll() is None, f"the run ended (exit {process.returncode}) before step {step}"
        assert time.monotonic() < deadline, f"no step {step} logged"
        time.sleep(0.01)


def child_with_rank(parent: int, rank: int) -> int:
    """The pid of the worker process with RANK=`rank` that torchrun (pid `parent`) started."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            environ = (proc / "environ").read_bytes().split(b"\0")
        except OSError:  # the process ended while we looked
            continue
        if ppid == parent and f"RANK={rank}".encode() in environ:
            return int(proc.name)
    raise AssertionError(f"torchrun {parent} has no worker with RANK={rank}")


def assert_same_end(reference: Path, model_dir: Path, where: str) -> None:
    for part in ("model", "ema", "optimizer", "scheduler"):
        assert_identical(load_checkpoint(reference / "ckpts" / "last.ckpt")[part],
                         load_checkpoint(model_dir / "ckpts" / "last.ckpt")[part], f"{where}: {part}")


def test_a_single_process_run_killed_twice_at_random_steps_ends_bit_identical(undisturbed_run, grid_corpus,
                                                                              tmp_path):
    first = random.randrange(3, STEPS - 2)  # from step 3 on, step_2.ckpt is there to resume from
    second = random.randrange(first + 1, STEPS - 1)
    where = f"killed at steps {first} and {second}"
    model_dir = tmp_path / "killed"
    cmd = entry_command("training.py", grid_opts(grid_corpus, model_dir, **EMA))
    for step in (first, second):
        start = log_size(model_dir)
        process = launch(cmd)
        wait_for_step(model_dir, step, process, after=start)
        process.send_signal(signal.SIGKILL)
        assert process.wait() == -signal.SIGKILL, where
    result = run(cmd)
    assert "resumed from" in result.stdout, where
    assert_same_end(undisturbed_run, model_dir, where)


def test_one_rank_of_a_torchrun_job_killed_at_a_random_step_restarts_and_ends_bit_identical(grid_corpus,
                                                                                            tmp_path):
    opts = {**EMA, "training.batch_size": 2}
    reference = tmp_path / "undisturbed"
    run(entry_command("training.py", grid_opts(grid_corpus, reference, **opts), nproc=2))
    step = random.randrange(3, STEPS - 2)
    model_dir = tmp_path / "killed"
    cmd = entry_command("training.py", grid_opts(grid_corpus, model_dir, **opts), nproc=2)
    cmd[3:3] = ["--max-restarts", "1", "--monitor-interval", "0.1"]  # after `python -m torch.distributed.run`
    job = launch(cmd, tmp_path / "torchrun.out")
    wait_for_step(model_dir, step, job, after=0)
    killed_at = log_size(model_dir)
    os.kill(child_with_rank(job.pid, 1), signal.SIGKILL)
    where = f"rank 1 killed at step {step}"
    returncode, output = job.wait(timeout=300), (tmp_path / "torchrun.out").read_text()
    assert "resumed from" in log_since(model_dir, killed_at), f"{where}: the job did not restart and resume"
    assert_same_end(reference, model_dir, where)
    assert returncode == 0, f"{where}: the restarted job failed; torchrun's output ends\n{output[-3000:]}"
