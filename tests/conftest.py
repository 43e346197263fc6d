"""Shared fixtures: a tiny generated GRID corpus and helpers to launch the real entry points."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
DEMO_CONFIG = ROOT / "experiments/configs/demo/grid_lipnet.yaml"


@pytest.fixture(scope="session")
def grid_corpus(tmp_path_factory) -> Path:
    from dataset.synthetic import generate

    out = tmp_path_factory.mktemp("demo")
    return generate(out, seed=0, only=["grid"], scale=0.03)["grid"]


def grid_opts(corpus: Path, model_dir: Path, **extra) -> list[str]:
    """Overrides that make the demo LipNet tiny and deterministic (no dropout, no flips)."""
    opts = {
        "data.root": corpus, "data.train": corpus / "train.txt", "data.dev": corpus / "dev.txt",
        "data.test": corpus / "test.txt", "data.augmentation.horizontal_flip": 0.0,
        "model.LipNet.channels": "[4, 8, 8]", "model.LipNet.hidden_size": 16, "model.LipNet.dropout": 0.0,
        "model.LipNet.batch_norm": "false",  # batch statistics differ between 1 x 2b and 2 x b
        "training.model_dir": model_dir, "training.batch_size": 4, "training.total_epoch": 2,
        "training.num_workers": 0, "training.log_freq": 1, "training.validation.unit": "step",
        "training.validation.freq": 2, "testing.batch_size": 2,
    }
    opts.update(extra)
    return [f"{k}={v}" for k, v in opts.items()]


# The single-process reference runs keep an EMA and BatchNorm statistics: both must resume exactly.
EMA = {"training.ema.enabled": "true", "training.ema.decay": 0.9, "model.LipNet.batch_norm": "true"}


@pytest.fixture(scope="session")
def undisturbed_run(grid_corpus, tmp_path_factory) -> Path:
    """A tiny single-process LipNet run (grid_opts with EMA) trained to its end: what fault tests compare with."""
    model_dir = tmp_path_factory.mktemp("undisturbed") / "run"
    run(entry_command("training.py", grid_opts(grid_corpus, model_dir, **EMA)))
    return model_dir


def assert_identical(a, b, where: str) -> None:
    """Equal nested checkpoint contents, tensors bit for bit (torch.equal)."""
    if torch.is_tensor(a):
        assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            assert_identical(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_identical(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def entry_command(script: str, opts: list[str], nproc: int = 0, config: Path = DEMO_CONFIG) -> list[str]:
    """`python script ...`, or `torchrun --nproc_per_node nproc script ...` when nproc > 0."""
    launcher = [sys.executable]
    if nproc:
        launcher += ["-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
                     "--master_addr", "127.0.0.1", "--master_port", str(free_port())]
    return launcher + [str(ROOT / script), "--config", str(config), "--opts", *opts]


def run(cmd: list[str], check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {result.returncode}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


@pytest.fixture(scope="session")
def sign_corpus(tmp_path_factory) -> Path:
    from dataset.synthetic import generate

    out = tmp_path_factory.mktemp("demo")
    return generate(out, seed=0, only=["sign"], scale=0.02)["sign"]
