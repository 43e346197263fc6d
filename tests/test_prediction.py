"""prediction.py: what it writes, and one-line errors for checkpoints that do not fit the config."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from conftest import DEMO_CONFIG, entry_command, grid_opts, run
from dataset.vocab import grid_characters
from modelling.lipnet import LipNet
from prediction import predict
from utils.checkpoint import save_atomic
from utils.config import load_config
from utils.distributed import DistInfo
from utils.errors import CheckpointError
from utils.inference import load_trained

CPU = DistInfo(rank=0, local_rank=0, world_size=1, device=torch.device("cpu"))


def tiny_checkpoint(path: Path, drop: str | None = None, **lipnet) -> Path:
    """The parts of training.py's checkpoint that prediction reads, for the LipNet grid_opts configures."""
    model = LipNet(input_size=(32, 64), **{"channels": (4, 8, 8), "hidden_size": 16, **lipnet})
    payload = {"model": model.state_dict(), "ema": None, "state": {"step": 3},
               "vocab": grid_characters().to_state()}
    payload.pop(drop, None)
    save_atomic(payload, path)
    return path


def test_prediction_writes_summary_and_results_and_leaves_no_temporary_files(grid_corpus, tmp_path):
    cfg = load_config(DEMO_CONFIG, grid_opts(grid_corpus, tmp_path))
    summaries = predict(load_trained(tiny_checkpoint(tmp_path / "a.ckpt"), cfg), tmp_path / "out", ["dev"], CPU)
    names = (grid_corpus / "dev.txt").read_text().split()
    rows = [json.loads(line) for line in (tmp_path / "out/dev/results.jsonl").read_text().splitlines()]
    assert [r["name"] for r in rows] == names
    summary = json.loads((tmp_path / "out/dev/summary.json").read_text())
    assert summary == json.loads(json.dumps(summaries["dev"])) and summary["step"] == 3
    assert sorted(p.name for p in (tmp_path / "out/dev").iterdir()) == ["alignment.png", "results.jsonl", "summary.json"]


@pytest.mark.parametrize("checkpoint, expected", [
    ({"drop": "vocab"}, r"holds no 'vocab': expected a checkpoint written by training.py"),
    ({"batch_norm": True}, r"\(model weights\) does not match the model: missing keys \[\], "
                           r"unexpected keys \['bn1.bias'"),  # the config has no BatchNorm
    ({"channels": (4, 8, 16)}, r"\(model weights\) does not match the model: .*size mismatch for conv3.weight: "
                               r".* the shape in current model is torch.Size\(\[8, 8, 3, 3, 3\]\)"),
], ids=["no_vocab", "extra_keys", "other_shapes"])
def test_a_checkpoint_that_does_not_fit_the_config_is_a_checkpoint_error_naming_it(
        grid_corpus, tmp_path, checkpoint, expected):
    cfg = load_config(DEMO_CONFIG, grid_opts(grid_corpus, tmp_path))
    path = tiny_checkpoint(tmp_path / "other.ckpt", **checkpoint)
    with pytest.raises(CheckpointError, match=rf"^checkpoint {re.escape(str(path))} {expected}"):
        load_trained(path, cfg)


def test_the_command_line_reports_a_checkpoint_error_in_one_line(grid_corpus, tmp_path):
    path = tiny_checkpoint(tmp_path / "wide.ckpt", channels=(4, 8, 16))
    result = run(entry_command("prediction.py", grid_opts(grid_corpus, tmp_path) + ["--ckpt", str(path)]), check=False)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(f"error: checkpoint {path} (model weights) does not match the model: ")
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert not (tmp_path / "prediction").exists()
