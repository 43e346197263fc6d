"""SignDataset: decoding, targets, per-(seed, epoch) temporal resampling, the three video sources, errors."""
from __future__ import annotations

import json
import logging
import os
import zipfile
from pathlib import Path

import pytest
import torch
from PIL import Image

from dataset.annotations import gloss_vocabulary, load_annotations, normalize_gloss
from dataset.loader import collate
from dataset.sign import SignDataset
from dataset.video import open_video
from utils.errors import DataError

PHOENIX = Path(os.environ.get("PHOENIX2014T_DIR", "/work/shared/data/phoenix-2014t"))
needs_phoenix = pytest.mark.skipif(not (PHOENIX / "phoenix-2014t.train").exists(),
                                   reason="Phoenix-2014T annotations not available")


def data_cfg(root: Path, **over) -> dict:
    cfg = {
        "train": root / "sign.train", "dev": root / "sign.dev", "test": root / "sign.test",
        "gloss2ids": root / "gloss2ids.pkl",
        "video": {"root": root, "pattern": "videos/{name}.mp4"},
        "input": {"max_frames": 400, "frame_size": None},
        "temporal": {"tmin": 0.5, "tmax": 1.5},
        "skip_bad_samples": False,
        "min_frames": 1,
    }
    for key, value in over.items():
        section, _, sub = key.partition(".")
        if sub:
            cfg[section] = {**cfg[section], sub: value}
        else:
            cfg[section] = value
    return cfg


def test_a_sample_decodes_to_uint8_rgb_with_its_gloss_ids(sign_corpus, caplog):
    with caplog.at_level(logging.INFO, logger="dataset.sign"):
        train = SignDataset(data_cfg(sign_corpus), "train", train=False, seed=0)
    assert "train: 6 samples, OOV 0.00%" in caplog.text
    annotations = load_annotations(sign_corpus / "sign.train")
    assert train.num_frames == [s.num_frames for s in annotations]
    for i, sample in enumerate(annotations):
        item = train[i]
        video = item["video"]
        assert video.dtype == torch.uint8 and video.shape[0] == 3 and video.shape[2:] == (128, 104)
        assert video.shape[1] % 4 == 0 and 0 <= video.shape[1] - sample.num_frames < 4
        assert item["name"] == sample.name and item["index"] == i and item["translation"] == sample.text
        assert item["text"] == normalize_gloss(sample.gloss) == train.target(i)[0]
        assert item["labels"].tolist() == train.vocab.encode(item["text"])
        assert item["labels"].dtype == torch.long and (item["labels"] > 0).all()
    first = open_video(sign_corpus / "videos" / f"{annotations[0].name}.mp4").read([0])
    assert torch.equal(train[0]["video"][:, 0], torch.from_numpy(first[0]).permute(2, 0, 1))
    batch = collate([train[0], train[1]])
    assert batch["video"].shape[:2] == (2, 3) and batch["label_lengths"].tolist() == [
        len(train[0]["labels"]), len(train[1]["labels"])]


def test_vocabulary_comes_from_gloss2ids_the_train_split_or_the_caller(sign_corpus):
    from_train = SignDataset(data_cfg(sign_corpus, gloss2ids=None), "dev", train=False, seed=0)
    assert from_train.vocab == gloss_vocabulary(load_annotations(sign_corpus / "sign.train"))
    from_file = SignDataset(data_cfg(sign_corpus), "dev", train=False, seed=0)
    assert len(from_file.vocab) > len(from_train.vocab)  # gloss2ids holds every gloss of the language
    shared = SignDataset(data_cfg(sign_corpus), "test", train=False, seed=0, vocab=from_train.vocab)
    assert shared.vocab is from_train.vocab


def test_frame_size_resizes_in_uint8(sign_corpus):
    item = SignDataset(data_cfg(sign_corpus, **{"input.frame_size": [64, 48]}), "dev", False, 0)[0]
    assert item["video"].shape[2:] == (64, 48) and item["video"].dtype == torch.uint8


def test_training_resamples_per_epoch_and_is_deterministic_per_seed_and_epoch(sign_corpus):
    train = SignDataset(data_cfg(sign_corpus), "train", train=True, seed=3)
    lengths = []
    for epoch in range(6):
        train.set_epoch(epoch)
        lengths.append(train[0]["video"].shape[1])
    assert len(set(lengths)) > 1 and all(t % 4 == 0 for t in lengths)
    train.set_epoch(2)
    first = train[0]["video"]
    again = SignDataset(data_cfg(sign_corpus), "train", train=True, seed=3)
    again.set_epoch(2)
    again[1]  # another sample read first changes nothing
    assert torch.equal(first, again[0]["video"])
    other_seed = SignDataset(data_cfg(sign_corpus), "train", train=True, seed=4)
    other_seed.set_epoch(2)
    draws = [other_seed[0]["video"]]
    for epoch in range(3, 6):
        other_seed.set_epoch(epoch)
        draws.append(other_seed[0]["video"])
    assert any(not torch.equal(first, d) for d in draws)


def test_evaluation_is_deterministic(sign_corpus):
    dev = SignDataset(data_cfg(sign_corpus), "dev", train=False, seed=0)
    first = dev[0]["video"]
    dev.set_epoch(5)
    assert torch.equal(first, dev[0]["video"])
    assert torch.equal(first, SignDataset(data_cfg(sign_corpus), "dev", train=False, seed=9)[0]["video"])


@pytest.fixture(scope="module")
def frame_sources(sign_corpus, tmp_path_factory) -> Path:
    """The train videos' decoded frames as PNG folders and as a zip per split, under a new root."""
    root = tmp_path_factory.mktemp("frames")
    with zipfile.ZipFile(root / "train.zip", "w") as archive:
        for sample in load_annotations(sign_corpus / "sign.train"):
            source = open_video(sign_corpus / "videos" / f"{sample.name}.mp4")
            folder = root / "fullFrame" / sample.name
            folder.mkdir(parents=True)
            for t, frame in enumerate(source.read(range(source.num_frames)), start=1):
                Image.fromarray(frame).save(folder / f"images{t:04d}.png")
                archive.write(folder / f"images{t:04d}.png", f"images/{sample.name.split('/')[1]}/images{t:04d}.png")
    return root


@pytest.mark.parametrize("pattern", ["fullFrame/{name}", "{split}.zip@images/{id}/images%04d.png"])
@pytest.mark.parametrize("train", [False, True])
def test_frame_folders_and_zips_give_the_mp4s_tensors(sign_corpus, frame_sources, pattern, train):
    mp4 = SignDataset(data_cfg(sign_corpus), "train", train=train, seed=0)
    frames = SignDataset(data_cfg(sign_corpus, **{"video.root": frame_sources, "video.pattern": pattern}),
                         "train", train=train, seed=0, vocab=mp4.vocab)
    for i in range(len(mp4)):
        assert torch.equal(mp4[i]["video"], frames[i]["video"])


def test_the_video_field_names_a_frame_folder_by_its_png_glob(sign_corpus, frame_sources, tmp_path):
    """Phoenix CSVs and Phoenix-2014 pickles give `<split>/<name>/1/*.png`-like video fields."""
    rows = [{"name": "train/demo_00001", "gloss": "HEUTE", "video": "fullFrame/train/demo_00001/*.png"},
            {"name": "train/demo_00002", "gloss": "HEUTE"}]
    (tmp_path / "dev.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = data_cfg(sign_corpus, dev=tmp_path / "dev.jsonl", **{"video.root": frame_sources, "video.pattern": "{video}"})
    dataset = SignDataset(cfg, "dev", train=False, seed=0)
    mp4 = SignDataset(data_cfg(sign_corpus), "train", train=False, seed=0)
    assert torch.equal(dataset[0]["video"], mp4[0]["video"])
    with pytest.raises(DataError, match=r"^sample train/demo_00002: .*uses \{video\}, but the annotation gives no video"):
        dataset[1]


def test_a_draw_shorter_than_min_frames_falls_back_to_every_frame(sign_corpus):
    n = load_annotations(sign_corpus / "sign.train")[0].num_frames
    min_frames = n + (-n % 4)  # exactly the evaluation length: half of the training draws are shorter
    train = SignDataset(data_cfg(sign_corpus, min_frames=min_frames), "train", train=True, seed=0)
    for epoch in range(6):
        train.set_epoch(epoch)
        assert train[0]["video"].shape[1] >= min_frames


@needs_phoenix
@pytest.mark.parametrize("split", ["dev", "test"])
def test_phoenix_2014t_annotations_have_no_oov_with_the_real_gloss2ids(split, caplog):
    files = {s: PHOENIX / f"phoenix-2014t.{s}" for s in ("train", "dev", "test")}
    cfg = data_cfg(PHOENIX, gloss2ids=PHOENIX / "gloss2ids.pkl", **files)
    with caplog.at_level(logging.INFO, logger="dataset.sign"):
        dataset = SignDataset(cfg, split, train=False, seed=0)
    assert f"{split}: {len(dataset)} samples, OOV 0.00%" in caplog.text and len(dataset.vocab) == 1117
    assert all(isinstance(n, int) and n > 0 for n in dataset.num_frames)
    unk = dataset.vocab.tokens.index(dataset.vocab.unk)
    for i in range(len(dataset)):
        text, labels = dataset.target(i)
        assert len(labels) == len(text.split()) > 0 and unk not in labels.tolist()


# --------------------------------------------------------------------------------------------
# Bad samples: one DataError from __getitem__ (never from the constructor) naming sample and file
# --------------------------------------------------------------------------------------------

def _broken_root(sign_corpus: Path, root: Path, kind: str) -> tuple[dict, str]:
    """A config whose dev sample's video is broken in the way `kind` says, and the path to name."""
    video = sign_corpus / "videos" / "dev" / "demo_00001.mp4"
    target = root / "videos" / "dev" / "demo_00001.mp4"
    target.parent.mkdir(parents=True)
    over: dict = {"video.root": root}
    if kind == "truncated":
        data = video.read_bytes()
        target.write_bytes(data[: len(data) // 2])
    elif kind == "not a video":
        target.write_text("this is not a video\n" * 100)
    elif kind == "zip without the frames":
        with zipfile.ZipFile(root / "dev.zip", "w") as archive:
            archive.writestr("images/other/images0001.png", b"")
        over["video.pattern"] = "{split}.zip@images/{id}/images%04d.png"
        return data_cfg(sign_corpus, **over), str(root / "dev.zip")
    return data_cfg(sign_corpus, **over), str(target)


@pytest.mark.parametrize("kind", ["missing", "truncated", "not a video", "zip without the frames"])
def test_an_unreadable_video_names_the_sample_and_the_file(sign_corpus, tmp_path, kind):
    cfg, path = _broken_root(sign_corpus, tmp_path, kind)
    dataset = SignDataset(cfg, "dev", train=False, seed=0)
    with pytest.raises(DataError) as excinfo:
        dataset[0]
    message = str(excinfo.value)
    assert message.startswith("sample dev/demo_00001: ") and path in message and "\n" not in message


def test_a_clip_shorter_than_min_frames_names_the_sample_and_both_lengths(sign_corpus):
    n = load_annotations(sign_corpus / "sign.dev")[0].num_frames
    length = n + (-n % 4)
    dataset = SignDataset(data_cfg(sign_corpus, min_frames=length + 1), "dev", train=False, seed=0)
    with pytest.raises(DataError, match=rf"^sample dev/demo_00001: .*\b{length} frames .*min_frames {length + 1}\b"):
        dataset[0]


def test_unknown_glosses_and_missing_glosses_fail_per_sample(sign_corpus, tmp_path, caplog):
    rows = [{"name": "dev/demo_00001", "gloss": "HEUTE XYLOPHON REGEN ZITHER"},
            {"name": "dev/demo_00002", "text": "nur text ."},
            {"name": "dev/demo_00003", "gloss": "HEUTE REGEN"}]
    (tmp_path / "dev.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with caplog.at_level(logging.INFO, logger="dataset.sign"):
        dataset = SignDataset(data_cfg(sign_corpus, dev=tmp_path / "dev.jsonl"), "dev", train=False, seed=0)
    assert "dev: 3 samples, OOV 33.33%" in caplog.text
    with pytest.raises(DataError, match=r"^sample dev/demo_00001: glosses \['xylophon', 'zither'\] are not in"):
        dataset[0]
    with pytest.raises(DataError, match=r"^sample dev/demo_00002: the annotation has no gloss"):
        dataset[1]
    assert dataset.target(2)[0] == "heute regen"
