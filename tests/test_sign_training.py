"""Sign2Gloss end to end through the entry points: training.py (one process and torchrun), prediction.py."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from conftest import ROOT, entry_command, run
from utils.checkpoint import load_checkpoint

S2G_CONFIG = ROOT / "experiments/configs/demo/sign_s2g.yaml"


def s2g_opts(corpus: Path, model_dir: Path, **extra) -> list[str]:
    """The demo S2G config made tiny: 32 x 32 crops, 2 S3D blocks, a narrow head, two steps an epoch."""
    opts = {
        "data.train": corpus / "sign.train", "data.dev": corpus / "sign.dev", "data.test": corpus / "sign.test",
        "data.video.root": corpus, "data.transform_cfg.img_size": 32,
        "model.RecognitionNetwork.GlossTokenizer.gloss2id_file": corpus / "gloss2ids.pkl",
        "model.RecognitionNetwork.s3d.use_block": 2, "model.RecognitionNetwork.visual_head.hidden_size": 16,
        "model.RecognitionNetwork.visual_head.ff_size": 32,
        "training.model_dir": model_dir, "training.batch_size": 3, "training.total_epoch": 1,
        "training.num_workers": 0, "training.log_freq": 1, "testing.batch_size": 2,
    }
    opts.update(extra)
    return [f"{k}={v}" for k, v in opts.items()]


def test_s2g_trains_validates_with_wer_and_predicts_with_beam_search(sign_corpus, tmp_path):
    model_dir = tmp_path / "s2g"
    result = run(entry_command("training.py", s2g_opts(sign_corpus, model_dir), config=S2G_CONFIG))
    assert "train: 6 samples, OOV 0.00%" in result.stdout
    assert "validation at step 2: wer" in result.stdout
    payload = load_checkpoint(model_dir / "ckpts" / "last.ckpt")
    assert payload["config"]["task"] == "S2G" and payload["vocab"]
    opts = s2g_opts(sign_corpus, model_dir, **{"testing.cfg.recognition.beam_size": 4})
    run(entry_command("prediction.py", opts, config=S2G_CONFIG))
    summary = json.loads((model_dir / "prediction" / "test" / "summary.json").read_text())
    assert {"wer", "del", "ins", "sub", "num_samples"} <= summary.keys() and summary["num_samples"] == 1
    row = json.loads((model_dir / "prediction" / "test" / "results.jsonl").read_text().splitlines()[0])
    assert row["name"].startswith("test/") and row["reference"]


def test_s2g_trains_under_torchrun_with_two_processes(sign_corpus, tmp_path):
    two = run(entry_command("training.py", s2g_opts(sign_corpus, tmp_path / "two", **{"training.batch_size": 1}),
                            nproc=2, config=S2G_CONFIG))
    assert "2 processes x batch 1" in two.stdout and "validation at step 3: wer" in two.stdout
    assert load_checkpoint(tmp_path / "two" / "ckpts" / "last.ckpt")["world_size"] == 2


@pytest.mark.parametrize("damage", ["missing", "not a video"])
def test_a_bad_sign_video_stops_training_naming_the_sample_or_is_skipped(sign_corpus, tmp_path, damage):
    corpus = tmp_path / "sign"
    shutil.copytree(sign_corpus, corpus)
    video = sorted((corpus / "videos" / "train").glob("*.mp4"))[0]
    video.unlink() if damage == "missing" else video.write_text("not a video")
    stopped = run(entry_command("training.py", s2g_opts(corpus, tmp_path / "stop", **{"training.shuffle": "false"}),
                                config=S2G_CONFIG), check=False)
    assert stopped.returncode == 2
    message = stopped.stderr.strip().splitlines()[-1]
    assert message.startswith(f"error: sample train/{video.stem}: ") and str(video) in message, message
    skipped = run(entry_command("training.py", s2g_opts(corpus, tmp_path / "skip", **{
        "training.shuffle": "false", "data.skip_bad_samples": "true"}), config=S2G_CONFIG))
    assert "epoch 1: 1 unreadable samples skipped" in skipped.stdout
