"""EfLip and the LRW word task: reference sizes, per-sample independence, LRW files, errors, train + predict."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import prediction
from conftest import ROOT, entry_command, run
from dataset import build_dataset, video_sample
from dataset.loader import collate
from dataset.lrw import LrwDataset, read_duration, read_npz, square_frames, word_boundary, word_classes
from modelling import build_model
from modelling.eflip import EfLip
from utils.checkpoint import save_atomic
from utils.config import TASK_SCHEMAS, load_config, resolve_section
from utils.errors import ConfigError, DataError
from utils.inference import load_trained
from utils.metrics import word_accuracy

DEMO = ROOT / "experiments/configs/demo/lrw_eflip.yaml"
WORDS = ["HOUSE", "ABOUT", "WORLD"]  # folder order on disk is not class order
EFLIP_DEFAULTS = resolve_section({}, TASK_SCHEMAS["lip_word"]["model"]["EfLip"])


def eflip(**changes) -> EfLip:
    small = {"hidden_size": 16, "transformer": {"layers": 1, "heads": 2, "ff_size": 16},
             "tcn": {"hidden_size": 12, "layers": 2, "kernel_size": 3}, "dropout": 0.0}
    return EfLip({**EFLIP_DEFAULTS, **small, **changes}, num_classes=5, word_boundary="boundary" in changes)


@pytest.mark.parametrize("size, reference", [("T", 8.2), ("S", 26.2), ("B", 11.9)])
def test_full_size_parameter_counts_match_the_reference_with_500_words(size, reference):
    model = EfLip({**EFLIP_DEFAULTS, "efficientnet_size": size}, num_classes=500)
    millions = sum(p.numel() for p in model.parameters()) / 1e6
    assert abs(millions - reference) <= 0.05 * reference, millions
    assert all(m.momentum == 0.01 for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm))


@pytest.mark.parametrize("with_boundary", [False, True])
def test_a_sample_s_output_does_not_depend_on_the_rest_of_its_batch(with_boundary):
    torch.manual_seed(0)
    model = eflip(**({"boundary": True} if with_boundary else {})).eval()
    if with_boundary:
        torch.nn.init.normal_(model.boundary)
    g = torch.Generator().manual_seed(1)

    def batch(others_longest: int) -> dict:
        lengths = torch.tensor([6, others_longest, 3])
        video = torch.randint(0, 256, (3, 1, int(lengths.max()), 24, 24), dtype=torch.uint8, generator=g)
        boundary = (torch.rand(3, int(lengths.max()), generator=g) > 0.5).float()
        return {"video": video, "video_lengths": lengths, "labels": torch.tensor([0, 1, 2]), "boundary": boundary}

    first, second = batch(9), batch(7)  # other samples, and a different padded length
    second["video"][0, :, :6], second["boundary"][0, :6] = first["video"][0, :, :6], first["boundary"][0, :6]
    with torch.no_grad():
        a, b = model(first)["logits"], model(second)["logits"]
    assert torch.allclose(a[0], b[0], atol=1e-5)
    assert not torch.allclose(a[1], b[1], atol=1e-3)  # the check can fail: other samples do change


def test_the_per_frame_network_runs_channels_last_and_matches_the_default_layout():
    torch.manual_seed(0)
    model = eflip().eval()
    assert all(m.weight.is_contiguous(memory_format=torch.channels_last)
               for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    reference = eflip().eval()
    reference.load_state_dict(model.state_dict())
    for module in reference.modules():
        if isinstance(module, torch.nn.Conv2d):
            module.to(memory_format=torch.contiguous_format)
            module.register_forward_pre_hook(lambda _, args: (args[0].contiguous(),))
    video = torch.randint(0, 256, (2, 1, 5, 24, 24), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    batch = {"video": video, "video_lengths": torch.tensor([5, 3]), "labels": torch.tensor([0, 1])}
    with torch.no_grad():
        torch.testing.assert_close(model(batch)["logits"], reference(batch)["logits"], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("size", ["t", "s", "b"])
def test_the_full_configs_cut_the_mouth_region_of_lrw_s_256_pixel_face_tracks(size):
    cfg = load_config(ROOT / f"experiments/configs/EfLip/lrw_{size}.yaml", [], check_paths=False)
    frames = np.zeros((29, 256, 256, 3), np.uint8)
    frames[:, 115:211, 79:175] = 200  # the fixed mouth region LRW code cuts
    out = square_frames(frames, cfg["data"]["input"], cfg["model"]["EfLip"]["in_channels"], "clip.mp4")
    assert out.shape == (29, 96, 96, 1) and (out == 200).all()


def test_training_mode_mixes_pairs_and_every_parameter_learns():
    model = eflip(boundary=True).train()
    model.mixup_alpha = 0.4
    batch = {"video": torch.randint(0, 256, (4, 1, 5, 24, 24), dtype=torch.uint8),
             "video_lengths": torch.tensor([5, 4, 5, 3]), "labels": torch.tensor([0, 1, 2, 3]),
             "boundary": torch.ones(4, 5)}
    loss = model(batch)["loss"]
    loss.backward()
    assert torch.isfinite(loss)
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


def test_decode_ranks_words_and_metrics_read_the_ranking():
    logits = torch.tensor([[0.1, 3.0, 2.0, 0.0, -1.0, 0.5], [5.0, 1.0, 0.5, 0.2, 0.1, 4.0]])
    assert eflip().decode({"logits": logits}, {}) == [[1, 2, 5, 0, 3], [0, 5, 1, 2, 3]]
    scores = word_accuracy(["A", "B", "B", "C"], ["A X", "X B", "B", "X Y Z W V C"])
    assert scores == {"top1": 50.0, "top5": 75.0, "per_word": {"A": 100.0, "B": 50.0, "C": 0.0}}


@pytest.fixture(scope="module")
def lrw_corpus(tmp_path_factory) -> Path:
    """Real mp4 + txt files in LRW's layout (3 words, 2 train / 1 val / 1 test clips each), and npz crops."""
    from dataset.synthetic import build_lrw

    root = tmp_path_factory.mktemp("lrw") / "lipread_mp4"
    build_lrw(root, seed=0, counts={"train": 2, "val": 1, "test": 1}, words=WORDS, workers=1)
    for video in root.glob("*/*/*.mp4"):
        crops = root.parent / "crops" / video.relative_to(root).with_suffix(".npz")
        crops.parent.mkdir(parents=True, exist_ok=True)
        np.savez(crops, data=np.full((29, 96, 96), 7, dtype=np.uint8))
    return root


def data_cfg(root: Path, **changes) -> dict:
    raw = {"root": str(root), **changes}
    return resolve_section(raw, TASK_SCHEMAS["lip_word"]["data"], "data.")


def test_the_word_list_is_the_sorted_folders_and_samples_carry_their_word(lrw_corpus):
    (lrw_corpus / ".cache").mkdir(exist_ok=True)  # not a word
    assert word_classes(lrw_corpus, None, None).words == ("ABOUT", "HOUSE", "WORLD")
    assert word_classes(lrw_corpus, 2, None).words == ("ABOUT", "HOUSE")
    assert word_classes(lrw_corpus, None, ["WORLD", "ABOUT"]).words == ("ABOUT", "WORLD")
    dev = LrwDataset(data_cfg(lrw_corpus, word_boundary=True), "dev", train=False, seed=0, in_channels=1)
    assert [dev.name(i) for i in range(len(dev))] == [f"{w}/val/{w}_00001" for w in ("ABOUT", "HOUSE", "WORLD")]
    sample = dev[2]
    assert sample["video"].shape == (1, 29, 88, 88) and sample["video"].dtype == torch.uint8
    assert sample["text"] == "WORLD" and sample["labels"].tolist() == [2]
    frames = round(read_duration(lrw_corpus / "WORLD/val/WORLD_00001.txt") * 25)
    assert frames > 0 and int(sample["boundary"].sum()) in (frames + 1, frames + 2, frames + 3)
    batch = collate([dev[0], "sample X: unreadable", sample])
    assert batch["labels"].tolist() == [0, 2] and batch["boundary"].shape == (2, 29) and batch["bad"]
    rgb = LrwDataset(data_cfg(lrw_corpus, input={"frame_size": 48, "crop_size": 40}), "test", False, 0, in_channels=3)
    assert rgb[0]["video"].shape == (3, 29, 40, 40)


def test_npz_crops_and_lrw_duration_lines(lrw_corpus, tmp_path):
    crops = lrw_corpus.parent / "crops"
    cfg = data_cfg(crops, format="npz", metadata_root=str(lrw_corpus), word_boundary=True)
    train = LrwDataset(cfg, "train", train=True, seed=0, in_channels=1)
    assert len(train) == 6 and int(train[0]["video"].max()) == 7 and "boundary" in train[0]
    assert read_npz(crops / "ABOUT/test/ABOUT_00001.npz").shape == (29, 96, 96)
    lrw_txt = tmp_path / "ABOUT_00001.txt"  # LRW's own files hold more lines around the duration
    lrw_txt.write_text("Text:  ABOUT\nConf:  4\n\nWORD START END ASDSCORE\nABOUT 0.35 0.61 1.5\n"
                       "Duration: 0.26 seconds\n")
    assert read_duration(lrw_txt) == 0.26
    assert word_boundary(0.26, 29).tolist() == [0.0] * 10 + [1.0] * 9 + [0.0] * 10


def test_bad_lrw_input_is_one_clear_error(lrw_corpus, tmp_path):
    bad_txt = tmp_path / "bad.txt"
    bad_txt.write_text("Text:  ABOUT\nConf:  4\n")
    with pytest.raises(DataError, match=r"bad.txt: no 'Duration: <seconds> seconds' line"):
        read_duration(bad_txt)
    np.savez(tmp_path / "other.npz", frames=np.zeros((29, 96, 96), np.uint8))
    with pytest.raises(DataError, match=r"other.npz: no 'data' array \(it holds \['frames'\]\)"):
        read_npz(tmp_path / "other.npz")
    np.savez(tmp_path / "float.npz", data=np.zeros((29, 96, 96), np.float32))
    with pytest.raises(DataError, match=r"float.npz: 'data' is float32 \(29, 96, 96\), expected uint8 T x H x W"):
        read_npz(tmp_path / "float.npz")
    (tmp_path / "broken.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match=r"crops .*broken.npz cannot be read"):
        read_npz(tmp_path / "broken.npz")
    with pytest.raises(ConfigError, match=r"data.words_list: \['SPEAK'\] have no folder under"):
        word_classes(lrw_corpus, None, ["ABOUT", "SPEAK"])
    with pytest.raises(ConfigError, match=r"data.words is 500, but .* holds 3 word folders"):
        word_classes(lrw_corpus, 500, None)
    with pytest.raises(DataError, match=r"ABOUT/dev does not exist \(data.dev names the split folder 'dev'\)"):
        LrwDataset(data_cfg(lrw_corpus, dev="dev"), "dev", False, 0, in_channels=1)
    with pytest.raises(ConfigError, match=r"crop_size 100 is larger than data.input.frame_size 96"):
        LrwDataset(data_cfg(lrw_corpus, input={"crop_size": 100}), "dev", False, 0, in_channels=1)
    with pytest.raises(ConfigError, match=r"npz holds grey crops: set model.EfLip.in_channels: 1"):
        LrwDataset(data_cfg(lrw_corpus, format="npz"), "dev", False, 0, in_channels=3)
    with pytest.raises(DataError, match=r"frames are 96 x 96, smaller than data.input.roi \[0, 0, 128, 96\]"):
        LrwDataset(data_cfg(lrw_corpus, input={"roi": [0, 0, 128, 96]}), "dev", False, 0, in_channels=1)[0]


def test_two_training_steps_then_prediction_reports_top1_top5_and_parameters(lrw_corpus, tmp_path):
    opts = [f"data.root={lrw_corpus}", f"training.model_dir={tmp_path / 'run'}", "data.input.frame_size=20",
            "data.input.crop_size=16", "data.word_boundary=true", "model.EfLip.hidden_size=16",
            "model.EfLip.transformer.heads=2", "model.EfLip.tcn.hidden_size=8", "model.EfLip.tcn.layers=2",
            "training.batch_size=3", "training.total_epoch=1", "training.num_workers=0", "testing.batch_size=2"]
    run(entry_command("training.py", opts, config=DEMO))
    assert (tmp_path / "run/ckpts/best.ckpt").is_file()
    result = run(entry_command("prediction.py", opts, config=DEMO))
    summary = json.loads((tmp_path / "run/prediction/test/summary.json").read_text())
    assert {"top1", "top5", "per_word", "params_m", "loss"} <= summary.keys() and summary["weights"] == "ema"
    assert summary["num_samples"] == 3 and set(summary["per_word"]) == {"ABOUT", "HOUSE", "WORLD"}
    assert summary["top5"] == 100.0  # 3 words: the ranking holds them all
    assert "top1" in result.stdout and "params_m" in result.stdout
    assert f"picture: {tmp_path / 'run/prediction/test/confusion.png'}" in result.stdout
    assert (tmp_path / "run/prediction/test/confusion.png").is_file()
    cfg = load_config(DEMO, opts)
    assert build_dataset(cfg, "test").vocab.words == ("ABOUT", "HOUSE", "WORLD")


def test_video_reads_an_lrw_clip_as_evaluation_does_and_prints_the_ranked_words(lrw_corpus, tmp_path, capsys):
    opts = [f"data.root={lrw_corpus}", f"training.model_dir={tmp_path / 'run'}", "data.input.frame_size=20",
            "data.input.crop_size=16", "data.word_boundary=true", "model.EfLip.hidden_size=16",
            "model.EfLip.transformer.heads=2", "model.EfLip.tcn.hidden_size=8", "model.EfLip.tcn.layers=2",
            "training.num_workers=0"]
    cfg = load_config(DEMO, opts)
    vocab = build_dataset(cfg, "train").vocab
    torch.manual_seed(0)
    model = build_model(cfg, vocab)
    torch.nn.init.normal_(model.boundary)  # zero at initialisation: the boundary input would not matter
    save_atomic({"model": model.state_dict(), "vocab": vocab.to_state(), "config": cfg}, tmp_path / "eflip.ckpt")
    trained = load_trained(tmp_path / "eflip.ckpt")
    prediction.predict(trained, tmp_path / "out", ["test"], prediction.init_distributed())
    hypotheses = {json.loads(line)["name"]: json.loads(line)["hypothesis"]
                  for line in (tmp_path / "out/test/results.jsonl").read_text().splitlines()}
    test = build_dataset(trained.cfg, "test", vocab=trained.vocab)
    clips = tmp_path / "clips"
    clips.mkdir()
    expected = {}
    for index in range(len(test)):
        mp4 = test.files[index]
        shutil.copy(mp4, clips / mp4.name)
        shutil.copy(mp4.with_suffix(".txt"), clips / mp4.with_suffix(".txt").name)
        sample = video_sample(trained.cfg, str(clips / mp4.name))
        assert torch.equal(sample["video"], test[index]["video"])
        assert torch.equal(sample["boundary"], test[index]["boundary"])
        with torch.no_grad():
            probabilities = trained.model(collate([test[index]]))["logits"][0].softmax(-1)
        ranked = hypotheses[test.name(index)].split()
        expected[str(clips / mp4.name)] = ranked, [float(probabilities[vocab.encode(w)]) for w in ranked]
    capsys.readouterr()
    prediction.main(["--ckpt", str(tmp_path / "eflip.ckpt"), "--video", str(clips)])
    printed = {}
    for line in capsys.readouterr().out.strip().splitlines():
        path, best, top = line.split("\t")
        pairs = [pair.split() for pair in top.removeprefix("(top 3: ").removesuffix(")").split(", ")]
        printed[path] = (best, [w for w, _ in pairs], [float(p) for _, p in pairs])
    assert printed.keys() == expected.keys()
    for path, (best, words, probabilities) in printed.items():
        assert best == words[0] and words == expected[path][0]
        assert probabilities == pytest.approx(expected[path][1], abs=5e-4)  # printed with 3 decimals

    (clips / "ABOUT_00001.txt").unlink()  # a user's clip without LRW's metadata: the whole clip is the word
    assert video_sample(trained.cfg, str(clips / "ABOUT_00001.mp4"))["boundary"].tolist() == [1.0] * 29
