"""What a user does with a trained model: prediction.py from the checkpoint alone, --video, export, pictures."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import prediction
from dataset import build_dataset, video_sample
from dataset.grid import read_user_video
from dataset.synthetic import write_video
from dataset.video import read_video
from modelling import build_model
from utils import export, plots
from utils.checkpoint import evaluation_weights, load_checkpoint, save_atomic
from utils.config import load_config
from utils.errors import CheckpointError, UserError
from utils.inference import Trained, load_trained, transcribe, video_inputs
from utils.metrics import sample_errors
from test_sign_training import S2G_CONFIG, s2g_opts


def results(path: Path) -> dict[str, dict]:
    return {row["name"]: row for row in map(json.loads, path.read_text().splitlines())}


def printed_readings(capsys) -> dict[str, str]:
    lines = capsys.readouterr().out.strip().splitlines()
    return dict(line.split("\t", 1) for line in lines)


def test_the_checkpoint_alone_evaluates_and_reads_videos_as_evaluation_does(undisturbed_run, grid_corpus, tmp_path,
                                                                           capsys):
    best = undisturbed_run / "ckpts" / "best.ckpt"
    prediction.main(["--ckpt", str(best), "--splits", "dev", "--save_subdir", "surface_prediction"])
    out = undisturbed_run / "surface_prediction"
    pictures = [out / "curve.png", out / "dev" / "alignment.png"]
    printed = capsys.readouterr().out
    assert [f"  picture: {path}" in printed for path in pictures] == [True, True], printed
    assert all(Image.open(path).size[0] >= 400 for path in pictures)  # drawn, and a PNG that decodes
    rows = results(undisturbed_run / "surface_prediction" / "dev" / "results.jsonl")
    summary = json.loads((undisturbed_run / "surface_prediction" / "dev" / "summary.json").read_text())
    assert summary["weights"] == "ema" and summary["num_samples"] == len(rows)
    for row in rows.values():  # the per-sample errors add up to the corpus rates
        assert row["errors"] == sample_errors("lip_sentence", row["reference"], row["hypothesis"])
    total = sum(r["errors"]["char_edits"] for r in rows.values()) / sum(r["errors"]["ref_chars"] for r in rows.values())
    assert summary["cer"] == pytest.approx(100 * total)

    videos = tmp_path / "videos"
    videos.mkdir()
    names = list(rows)[:2]
    for name in names:
        shutil.copy(grid_corpus / "videos" / f"{name}.mpg", videos / f"{name.replace('/', '_')}.mpg")
    capsys.readouterr()
    prediction.main(["--ckpt", str(best), "--video", str(videos)])
    readings = printed_readings(capsys)
    assert readings == {str(videos / f"{n.replace('/', '_')}.mpg"): rows[n]["hypothesis"] for n in names}


def test_video_reads_a_demo_like_mp4_and_prints_a_sentence(undisturbed_run, grid_corpus, tmp_path, capsys):
    frames = read_video(next((grid_corpus / "videos").rglob("*.mpg")))
    write_video(tmp_path / "mouth.mp4", frames, "mp4")
    prediction.main(["--ckpt", str(undisturbed_run / "ckpts" / "best.ckpt"), "--video", str(tmp_path / "mouth.mp4")])
    (path, text), = printed_readings(capsys).items()
    assert path == str(tmp_path / "mouth.mp4") and set(text) <= set(" ABCDEFGHIJKLMNOPQRSTUVWXYZ")


def test_video_inputs_and_mouth_crops(grid_corpus, tmp_path):
    video = next((grid_corpus / "videos").rglob("*.mpg"))
    assert video_inputs(video) == [str(video)]
    (tmp_path / "clips" / "s2").mkdir(parents=True)
    for name in ("b10.mp4", "b9.mpg", "notes.txt", "s2/a.avi"):
        (tmp_path / "clips" / name).write_bytes(b"")
    assert video_inputs(tmp_path / "clips") == [str(tmp_path / "clips" / n) for n in ("b9.mpg", "b10.mp4", "s2/a.avi")]
    (tmp_path / "frames").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "frames" / "0001.png")
    assert video_inputs(tmp_path / "frames") == [str(tmp_path / "frames")]
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("")
    with pytest.raises(UserError, match="holds no video files"):
        video_inputs(tmp_path / "empty")
    with pytest.raises(UserError, match=r"^--video .*nowhere does not exist$"):
        video_inputs(tmp_path / "nowhere")

    face = tmp_path / "face.mp4"  # 4:3 frames are no mouth crop for a 2:1 input
    write_video(face, np.zeros((3, 48, 64, 3), np.uint8), "mp4")
    inp = {"height": 32, "width": 64, "channel_order": "BGR", "max_frames": 75}
    assert read_user_video(str(video), inp).shape == (3, 75, 32, 64)  # already a crop: read as it is
    assert read_user_video(str(face), inp, crop_mouth="no").shape == (3, 3, 32, 64)
    # frames that need cropping go through dataset.preprocess_lip: test_preprocess_lip.py, on a real face


def test_a_g2t_model_refuses_video_in_one_line(grid_corpus):
    with pytest.raises(UserError, match=r"^--video: a G2T model does not read videos; "
                                        r"models that do: lip_sentence, lip_word, S2G"):
        video_sample({"task": "G2T"}, "clip.mp4")
    g2t = Trained({"task": "G2T"}, torch.nn.Linear(1, 1), None, Path("g2t.ckpt"), "model", 0)
    with pytest.raises(UserError, match=r"^--video: a G2T model does not read videos"):
        next(transcribe(g2t, grid_corpus / "videos"))  # refused before any video is looked for


def test_a_sign2gloss_checkpoint_reads_a_video_as_evaluation_does(sign_corpus, tmp_path, capsys):
    cfg = load_config(S2G_CONFIG, s2g_opts(sign_corpus, tmp_path / "s2g"))
    vocab = build_dataset(cfg, "train").vocab
    torch.manual_seed(0)
    model = build_model(cfg, vocab)
    save_atomic({"model": model.state_dict(), "vocab": vocab.to_state(), "config": cfg}, tmp_path / "s2g.ckpt")
    trained = load_trained(tmp_path / "s2g.ckpt")
    dev = build_dataset(trained.cfg, "dev", vocab=trained.vocab)
    spec = dev.video_spec(0)
    expected = prediction.predict(trained, tmp_path / "out", ["dev"], prediction.init_distributed())
    hypothesis = results(tmp_path / "out" / "dev" / "results.jsonl")[dev.name(0)]["hypothesis"]
    assert expected["dev"]["num_samples"] == len(dev)
    assert list(transcribe(trained, spec)) == [(spec, hypothesis)]


def test_export_round_trip_gives_equal_tensors_and_the_same_predictions(undisturbed_run, tmp_path, capsys):
    best = undisturbed_run / "ckpts" / "best.ckpt"
    export.main(["--ckpt", str(best), "--output", str(tmp_path / "exported")])
    assert sorted(p.name for p in (tmp_path / "exported").iterdir()) == ["config.yaml", "model.safetensors", "vocab.json"]
    payload = load_checkpoint(best)
    weights, which = evaluation_weights(payload)
    assert which == "ema"
    back = export.read_export(tmp_path / "exported")
    assert back["model"].keys() == weights.keys()
    assert all(torch.equal(back["model"][k], weights[k]) for k in weights)
    assert back["config"] == payload["config"] and back["vocab"] == payload["vocab"]
    assert back["state"]["step"] == payload["state"]["step"]
    from_folder, from_ckpt = load_trained(tmp_path / "exported"), load_trained(best)
    video = next(Path(from_ckpt.cfg["data"]["root"]).rglob("*.mpg"))
    assert list(transcribe(from_folder, video)) == list(transcribe(from_ckpt, video))


def test_export_refuses_a_checkpoint_without_config_and_a_folder_without_weights(tmp_path):
    save_atomic({"model": {}, "vocab": {}}, tmp_path / "bare.ckpt")
    with pytest.raises(CheckpointError, match=r"holds no 'config': expected a checkpoint written by training.py"):
        export.export(tmp_path / "bare.ckpt", tmp_path / "out")
    assert not (tmp_path / "out").exists()
    with pytest.raises(CheckpointError, match=r"lacks model.safetensors, config.yaml, vocab.json"):
        export.read_export(tmp_path)


def test_prediction_needs_a_config_or_a_checkpoint(capsys):
    with pytest.raises(SystemExit) as exit_:
        prediction.main([])
    assert exit_.value.code == 2
    assert "give --config FILE, or --ckpt FILE to use the config stored in the checkpoint" in capsys.readouterr().err


def png_size(path: Path) -> tuple[int, int]:
    assert path.stat().st_size > 0
    with Image.open(path) as image:
        return image.size


def test_plots_of_a_real_run_have_the_size_asked_for(undisturbed_run, tmp_path):
    curve = plots.learning_curve(undisturbed_run, tmp_path / "curve.png")
    assert png_size(curve) == (11 * plots.DPI, 4 * plots.DPI)
    scalars = plots.read_scalars(undisturbed_run / "tensorboard")
    assert {"train/loss", "dev/cer", "dev/loss"} <= scalars.keys()

    trained = load_trained(undisturbed_run / "ckpts" / "best.ckpt")
    name = build_dataset(trained.cfg, "dev").name(0)
    path = plots.alignment(trained, "dev", name, tmp_path / "alignment.png")
    width, height = png_size(path)
    assert width >= 8 * plots.DPI and height >= int(1.6 * plots.DPI)
    with pytest.raises(UserError, match=r"^alignment: no sample 'nobody' in the dev split"):
        plots.alignment(trained, "dev", "nobody")
    with pytest.raises(UserError, match="holds no TensorBoard event files"):
        plots.read_scalars(tmp_path)


def test_confusion_counts_the_most_confused_pairs_of_classification_rows(tmp_path):
    rows = ([{"reference": "ABOUT", "hypothesis": "ABOVE ABOUT"}] * 3 + [{"reference": "SPEND", "hypothesis": "SPENT"}] * 2
            + [{"reference": "ABOUT", "hypothesis": "ABOUT"}] * 5 + [{"reference": "WORLD", "hypothesis": "WORDS"}])
    assert plots.confused_pairs(rows, top=2) == [(("ABOUT", "ABOVE"), 3), (("SPEND", "SPENT"), 2)]
    assert png_size(plots.confusion(rows, tmp_path / "confusion.png", top=2)) == (800, int(2.1 * plots.DPI))
    assert plots.confused_pairs(rows[5:10]) == []  # all right: the picture says so rather than plotting nothing
    assert png_size(plots.confusion(rows[5:10], tmp_path / "none.png", source="results.jsonl")) == (800, int(1.8 * plots.DPI))


def test_sample_errors_per_task():
    assert sample_errors("lip_sentence", "BIN BLUE AT", "BIN BLUE") == {
        "sub": 0, "del": 1, "ins": 0, "ref_words": 3, "char_edits": 3, "ref_chars": 11}
    assert sample_errors("S2G", "REGEN WIND", "regen SONNE WIND") == {"sub": 0, "del": 0, "ins": 1, "ref_words": 2}
    assert sample_errors("G2T", "es regnet.", "es schneit .") == {"sub": 1, "del": 0, "ins": 0, "ref_words": 3}
    assert sample_errors("lip_word", "ABOUT", "ABOVE ABOUT") == {"correct": False, "in_top5": True}
    assert sample_errors("lip_word", "ABOUT", "ABOUT ABOVE") == {"correct": True, "in_top5": True}
