"""Sign2Text: feature caching with extract_feature.py (torchrun, resumable, provenance-checked), the joint model on
cached features and on videos, and training/prediction through the entry points."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import prediction
from conftest import ROOT, entry_command, run
from dataset import build_dataset
from dataset.feature_cache import INDEX_FILE, META_FILE
from extract_feature import extract
from modelling import build_model
from test_sign_training import S2G_CONFIG, s2g_opts
from test_translation import g2t_opts
from utils.checkpoint import load_checkpoint, save_atomic
from utils.config import load_config
from utils.distributed import init_distributed
from utils.errors import DataError
from utils.inference import load_trained, transcribe
from utils.optim import build_optimizer

S2T_CONFIG = ROOT / "experiments/configs/demo/sign_s2t.yaml"


@pytest.fixture(scope="module")
def s2g_checkpoint(sign_corpus, tmp_path_factory) -> Path:
    """A tiny Sign2Gloss model trained for one epoch by training.py."""
    model_dir = tmp_path_factory.mktemp("s2g") / "run"
    run(entry_command("training.py", s2g_opts(sign_corpus, model_dir), config=S2G_CONFIG))
    return model_dir / "ckpts" / "best.ckpt"


def s2t_opts(corpus: Path, s2g: Path, cache: Path, model_dir: Path, **extra) -> list[str]:
    """The demo S2T config on the tiny S2G model of s2g_opts (same crops and frontend) and the tiny mBART of
    g2t_opts."""
    return g2t_opts(corpus, model_dir, **{
        "data.video.root": corpus, "data.transform_cfg.img_size": 32, "data.feature_cache": cache,
        "model.RecognitionNetwork.load_ckpt": s2g, "model.RecognitionNetwork.s3d.use_block": 2,
        "model.RecognitionNetwork.visual_head.hidden_size": 16, "model.RecognitionNetwork.visual_head.ff_size": 32,
        "model.VLMapper.hidden_size": 16, **extra})


@pytest.fixture(scope="module")
def feature_cache(sign_corpus, s2g_checkpoint, tmp_path_factory) -> Path:
    """Features of every split, extracted by two torchrun processes (float16, the default)."""
    cache = tmp_path_factory.mktemp("cache") / "features"
    opts = s2t_opts(sign_corpus, s2g_checkpoint, cache, cache.parent / "unused")
    run(entry_command("extract_feature.py", opts, nproc=2, config=S2T_CONFIG))
    return cache


def test_two_ranks_cache_every_sample_exactly_once_and_a_rerun_extracts_nothing(
        sign_corpus, s2g_checkpoint, feature_cache):
    for split, count in (("train", 6), ("dev", 1), ("test", 1)):
        index = json.loads((feature_cache / split / INDEX_FILE).read_text())
        files = sorted(p.name for p in (feature_cache / split).glob("*.npy"))
        assert len(index) == count and sorted(e["file"] for e in index.values()) == files
        for name, entry in index.items():
            array = np.load(feature_cache / split / entry["file"], mmap_mode="r")
            assert name.startswith(f"{split}/") and array.dtype == np.float16 and array.shape[0] == entry["frames"]
    meta = json.loads((feature_cache / META_FILE).read_text())
    assert meta["dtype"] == "float16" and len(meta["frontend_sha256"]) == 64
    stamps = {p: p.stat().st_mtime_ns for p in feature_cache.rglob("*.npy")}
    again = run(entry_command("extract_feature.py", s2t_opts(sign_corpus, s2g_checkpoint, feature_cache, feature_cache),
                              config=S2T_CONFIG))
    assert "train: 0 samples to extract on this process (6 already cached)" in again.stdout
    assert stamps == {p: p.stat().st_mtime_ns for p in feature_cache.rglob("*.npy")}


def test_s2t_trains_on_cached_features_and_predicts_bleu_rouge_and_wer(sign_corpus, s2g_checkpoint, feature_cache,
                                                                       tmp_path):
    model_dir = tmp_path / "s2t"
    opts = s2t_opts(sign_corpus, s2g_checkpoint, feature_cache, model_dir)
    trained = run(entry_command("training.py", opts, config=S2T_CONFIG))
    # the recognition branch is the Sign2Gloss model's, loaded and reported
    assert "model.RecognitionNetwork.load_ckpt: loaded" in trained.stdout
    assert "validation at step 3: bleu1" in trained.stdout and " bleu4 " in trained.stdout and " wer " in trained.stdout
    run(entry_command("prediction.py", opts, config=S2T_CONFIG))
    summary = json.loads((model_dir / "prediction" / "test" / "summary.json").read_text())
    assert {"bleu1", "bleu4", "rouge_l", "wer", "del", "ins", "sub"} <= summary.keys()
    row = json.loads((model_dir / "prediction" / "test" / "results.jsonl").read_text())
    assert row["reference"].endswith(" .") and row["gloss_reference"].split() and "gloss_hypothesis" in row

    # the checkpoint alone reads a video (its frozen frontend came along) as evaluation on videos does
    best = model_dir / "ckpts" / "best.ckpt"
    on_videos = load_trained(best, opts=["data.input_type=video"])
    prediction.predict(on_videos, tmp_path / "on_videos", ["test"], init_distributed())
    row = json.loads((tmp_path / "on_videos" / "test" / "results.jsonl").read_text())
    spec = build_dataset(on_videos.cfg, "test", vocab=on_videos.vocab).signs.video_spec(0)
    assert list(transcribe(load_trained(best), spec)) == [
        (spec, f"{row['hypothesis']}\t(glosses: {row['gloss_hypothesis']})")]


def test_a_cache_from_other_frontend_weights_or_other_preprocessing_is_refused(
        sign_corpus, s2g_checkpoint, feature_cache, tmp_path):
    other = load_checkpoint(s2g_checkpoint)
    name = next(k for k in other["model"] if k.startswith("frontend.") and k.endswith("weight"))
    other["model"][name] = other["model"][name] + 1e-3
    save_atomic(other, tmp_path / "other.ckpt")
    for change, what in (({"model.RecognitionNetwork.load_ckpt": tmp_path / "other.ckpt"}, "frontend_sha256"),
                         ({"data.transform_cfg.img_size": 40}, "preprocessing"),
                         ({"data.input_type": "head_feature"}, "level frontend,")):
        cfg = load_config(S2T_CONFIG, s2t_opts(sign_corpus, s2g_checkpoint, feature_cache, tmp_path / "m", **change))
        with pytest.raises(DataError, match=f"was made with {what}.* other weights, preprocessing or level"):
            build_dataset(cfg, "dev")
    refused = run(entry_command("extract_feature.py", s2t_opts(sign_corpus, tmp_path / "other.ckpt", feature_cache,
                                                              tmp_path / "m"), config=S2T_CONFIG), check=False)
    assert refused.returncode != 0 and "but this extraction has" in refused.stderr + refused.stdout


def test_s2t_on_cached_float32_features_equals_s2t_computing_them_from_the_videos(
        sign_corpus, s2g_checkpoint, tmp_path):
    opts = s2t_opts(sign_corpus, s2g_checkpoint, tmp_path / "fp32", tmp_path / "m")
    cached_cfg = load_config(S2T_CONFIG, opts)
    extract(cached_cfg, ["train"], "float32", init_distributed())
    live_cfg = load_config(S2T_CONFIG, [*opts, "data.input_type=video"])
    cached_set = build_dataset(cached_cfg, "train")
    live_set = build_dataset(live_cfg, "train", vocab=cached_set.vocab)
    torch.manual_seed(0)
    cached_model = build_model(cached_cfg, cached_set.vocab).eval()
    live_model = build_model(live_cfg, cached_set.vocab).eval()
    live_model.load_state_dict(cached_model.state_dict())
    assert not any(p.requires_grad for p in cached_model.recognition.frontend.parameters())
    for index in range(len(cached_set)):  # one clip at a time, as extraction runs them
        with torch.no_grad():
            cached = cached_model(cached_set.collate([cached_set[index]]))
            live = live_model(live_set.collate([live_set[index]]))
        torch.testing.assert_close(cached["encoder_embeddings"], live["encoder_embeddings"], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(cached["loss"], live["loss"], rtol=1e-5, atol=1e-5)


def test_the_embedding_mapper_starts_from_the_translation_gloss_embeddings_and_learns(
        sign_corpus, s2g_checkpoint, feature_cache, tmp_path):
    opts = s2t_opts(sign_corpus, s2g_checkpoint, feature_cache, tmp_path / "m", **{"model.VLMapper.type": "embedding"})
    cfg = load_config(S2T_CONFIG, opts)
    dataset = build_dataset(cfg, "train")
    torch.manual_seed(0)
    model = build_model(cfg, dataset.vocab)
    assert model.mapper.table.shape == (len(dataset.vocab.glosses), 16)
    assert not hasattr(model.translation, "gloss_embedding")  # the mapper alone feeds the encoder
    outputs = model(dataset.collate([dataset[0], dataset[1]]))
    outputs["loss"].backward()
    assert model.mapper.table.grad is not None and model.mapper.table.grad.abs().sum() > 0
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_s2t_on_cached_head_outputs_equals_s2t_running_the_frozen_recognition_branch_on_the_videos(
        sign_corpus, s2g_checkpoint, tmp_path):
    opts = s2t_opts(sign_corpus, s2g_checkpoint, tmp_path / "head", tmp_path / "m", **{"data.input_type": "head_feature"})
    head_cfg = load_config(S2T_CONFIG, opts)
    extract(head_cfg, ["train"], "float32", init_distributed())
    meta = json.loads((tmp_path / "head" / META_FILE).read_text())
    head_set = build_dataset(head_cfg, "train")
    assert meta["level"] == "head" and len(meta["head_sha256"]) == 64
    assert meta["feature_size"] == 16 + len(head_set.vocab.glosses)  # gloss features (hidden 16), then gloss logits
    live_cfg = load_config(S2T_CONFIG, [*opts, "data.input_type=video"])
    live_set = build_dataset(live_cfg, "train", vocab=head_set.vocab)
    torch.manual_seed(0)
    head_model = build_model(head_cfg, head_set.vocab).eval()
    live_model = build_model(live_cfg, head_set.vocab).eval()
    live_model.load_state_dict(head_model.state_dict())
    trainable = {n.split(".")[0] for n, p in head_model.named_parameters() if p.requires_grad}
    assert trainable == {"mapper", "translation"}
    # the demo's learning_rate.recognition names a frozen branch: nothing to train, no error
    groups = build_optimizer(head_model, head_cfg["training"]["optimization"]).param_groups
    assert [g["name"] for g in groups] == ["default"]
    for index in range(len(head_set)):
        with torch.no_grad():
            batch = head_set.collate([head_set[index]])
            cached, live = head_model(batch), live_model(live_set.collate([live_set[index]]))
        torch.testing.assert_close(cached["encoder_embeddings"], live["encoder_embeddings"], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(cached["translation_loss"], live["translation_loss"], rtol=1e-5, atol=1e-5)
        assert cached["loss"] == cached["translation_loss"]  # the frozen branch adds nothing to learn from
        assert head_model.decode(cached, batch)["gloss"] == live_model.decode(live, batch)["gloss"]
