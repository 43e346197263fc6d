"""Tests of dataset.synthetic: real formats read back with decord / gzip+pickle, determinism,
idempotence, and that the classes (characters, glosses, words) are visually distinguishable."""
from __future__ import annotations

import gzip
import hashlib
import pickle
import re
from collections import defaultdict
from pathlib import Path

import decord
import numpy as np
import pytest
import torch

from dataset import synthetic as syn

SCALE = 0.05
PHOENIX_KEYS = {"name", "signer", "gloss", "text", "sign", "num_frames", "alignments"}


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> dict[str, Path]:
    return syn.generate(tmp_path_factory.mktemp("demo"), seed=0, scale=SCALE, log=None)


def read_video(path: Path) -> np.ndarray:
    reader = decord.VideoReader(str(path))
    return reader.get_batch(list(range(len(reader)))).asnumpy()


def tree_hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def class_separation(groups: dict[object, list[np.ndarray]]) -> tuple[float, float, float]:
    """(mean same-class distance, mean different-class distance, nearest-centroid accuracy
    with leave-one-out centroids) of feature vectors grouped by class."""
    items = [(c, v) for c, vs in groups.items() for v in vs]
    feats = np.stack([v for _, v in items])
    class_ids = {c: i for i, c in enumerate(groups)}
    labels = np.array([class_ids[c] for c, _ in items])
    sq = (feats**2).sum(1)
    dist = np.sqrt(np.maximum(sq[:, None] + sq[None] - 2 * feats @ feats.T, 0))
    same = labels[:, None] == labels[None]
    off_diag = ~np.eye(len(items), dtype=bool)
    sums = {c: np.sum(vs, axis=0) for c, vs in groups.items()}
    scored = [(c, v) for c, v in items if len(groups[c]) > 1]  # own class needs another item
    correct = 0
    for c, v in scored:
        centroids = {k: (s - v) / (len(groups[k]) - 1) if k == c else s / len(groups[k])
                     for k, s in sums.items()}
        correct += min(centroids, key=lambda k: np.linalg.norm(centroids[k] - v)) == c
    return dist[same & off_diag].mean(), dist[~same].mean(), correct / len(scored)


def normalise(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float32).ravel()
    return (x - x.mean()) / (x.std() + 1e-6)


# ----------------------------------------------------------------------------------- GRID


def read_align(path: Path) -> list[tuple[int, int, str]]:
    rows = [line.split() for line in path.read_text().splitlines()]
    return [(int(s), int(e), w) for s, e, w in rows]


def grid_items(root: Path) -> list[tuple[str, str, str]]:
    return [(split, *line.split("/")) for split in ("train", "dev", "test")
            for line in (root / f"{split}.txt").read_text().split()]


def test_grid_layout_videos_and_alignments(demo):
    root = demo["grid"]
    items = grid_items(root)
    for split in ("train", "dev", "test"):  # overlapped setting: every speaker in every split
        assert {spk for s, spk, _ in items if s == split} == set(syn.GRID_SPEAKERS)
    assert len({(spk, vid) for _, spk, vid in items}) == len(items)  # unique per speaker
    for _, spk, vid in items:
        frames = read_video(root / "videos" / spk / f"{vid}.mpg")
        assert frames.shape == (75, 64, 128, 3)
        segments = read_align(root / "align" / spk / "align" / f"{vid}.align")
        assert segments[0][0] == 0 and segments[-1][1] == 75000
        assert all(a[1] == b[0] for a, b in zip(segments, segments[1:]))
        assert all(s < e and s % 1000 == 0 for s, e, _ in segments)
        assert segments[0][2] == segments[-1][2] == "sil"
        words = [w for _, _, w in segments if w not in ("sil", "sp")]
        assert all(w in slot for w, slot in zip(words, syn.GRID_SLOTS)) and len(words) == 6
        assert syn.grid_video_id(words) == vid
        for s, e, w in segments:  # a word lasts 2-3 frames per character
            if w not in ("sil", "sp"):
                assert 2 * len(w) <= (e - s) // 1000 <= 3 * len(w) + 1


def test_grid_timeline_matches_alignment():
    rng = np.random.default_rng(3)
    for index in rng.choice(64000, size=50, replace=False):
        words = syn.grid_sentence(int(index))
        timeline, segments = syn.grid_timeline(words, rng)
        assert len(timeline) == 75
        for s, e, label in segments:
            shown = [syn.GRID_CHARS[p] if p < syn.GRID_NEUTRAL else "." for p in timeline[s:e]]
            collapsed = "".join(c for i, c in enumerate(shown) if i == 0 or c != shown[i - 1])
            if label == "sil":
                assert set(shown) == {"."}
            elif label == "sp":
                assert collapsed in (" ", " .")
            else:
                assert collapsed == re.sub(r"(.)(?=\1)", r"\1.", label)


def test_grid_characters_are_distinguishable(demo):
    """The first frame of each word shows its first character: frames of the same character
    (other videos, speakers, shifts, noise) are much closer than frames of different ones."""
    root = demo["grid"]
    groups: dict[str, list[np.ndarray]] = defaultdict(list)
    for _, spk, vid in grid_items(root):
        frames = read_video(root / "videos" / spk / f"{vid}.mpg")
        for s, _, word in read_align(root / "align" / spk / "align" / f"{vid}.align"):
            label = "neutral" if word == "sil" else word[0] if word != "sp" else " "
            small = frames[s // 1000].reshape(32, 2, 64, 2, 3).mean(axis=(1, 3))  # 32x64 input
            groups[label].append(normalise(small))
    same, different, accuracy = class_separation(groups)
    assert len(groups) >= 15
    assert same < 0.5 * different
    assert accuracy >= 0.98


# ----------------------------------------------------------------------------------- sign


def load_annotations(root: Path, split: str) -> list[dict]:
    with gzip.open(root / f"sign.{split}", "rb") as f:
        return pickle.load(f)


def test_sign_annotations_and_videos(demo):
    root = demo["sign"]
    with open(root / "gloss2ids.pkl", "rb") as f:
        vocab = pickle.load(f)
    assert list(vocab)[:8] == ["<s>", "<pad>", "</s>", "<unk>", "<mask>", "zh_CN", "de_DE",
                               "zh_CSL"]
    assert list(vocab.values()) == list(range(len(vocab)))
    assert list(vocab)[8:] == sorted(list(vocab)[8:])
    assert 25 <= len(vocab) - 8 <= 40
    for split in ("train", "dev", "test"):
        entries = load_annotations(root, split)
        assert entries
        for e in entries:
            assert set(e) == PHOENIX_KEYS
            assert e["name"].startswith(f"{split}/")
            assert re.fullmatch(r"Signer0[1-4]", e["signer"])
            glosses = e["gloss"].split()
            assert 2 <= len(glosses) <= 6 and all(g.isupper() and g in vocab for g in glosses)
            assert e["text"].endswith(" .") and e["text"] == e["text"].lower()
            assert isinstance(e["sign"], torch.Tensor) and e["sign"].shape == torch.Size([0])
            frames = read_video(root / "videos" / f"{e['name']}.mp4")
            assert frames.shape == (e["num_frames"], 128, 104, 3)
            ids = [int(i) for i in e["alignments"]["demo"].split()]
            assert len(ids) == e["num_frames"] and ids[0] == ids[-1] == 0
            runs = [i for k, i in enumerate(ids) if i and (k == 0 or ids[k - 1] != i)]
            assert runs == [vocab[g] for g in glosses]


def test_sign_text_is_a_function_of_glosses():
    texts: dict[str, set[str]] = defaultdict(set)
    rng = np.random.default_rng(0)
    for _ in range(3000):
        gloss, text = syn.sign_sentence(rng)
        texts[gloss].add(text)
        assert "  " not in text and text.endswith(" .")
    assert all(len(t) == 1 for t in texts.values())
    used = {g for gloss in texts for g in gloss.split()}
    assert used == set(syn.SIGN_GLOSSES)


def test_sign_glosses_are_distinguishable(tmp_path):
    """Mean frame of a gloss segment minus the video's neutral first frame, at 32x26: same
    gloss closer than different glosses; nearest centroid recognises the gloss."""
    syn.build_sign(tmp_path, seed=5, counts={"train": 50})
    groups: dict[int, list[np.ndarray]] = defaultdict(list)
    for e in load_annotations(tmp_path, "train"):
        frames = read_video(tmp_path / "videos" / f"{e['name']}.mp4").astype(np.float32)
        ids = np.array([int(i) for i in e["alignments"]["demo"].split()])
        for gid in set(ids.tolist()) - {0}:
            diff = frames[ids == gid].mean(0) - frames[0]
            groups[gid].append(normalise(diff.reshape(32, 4, 26, 4, 3).mean(axis=(1, 3))))
    same, different, accuracy = class_separation(groups)
    assert len(groups) >= 28
    assert same < 0.75 * different
    assert accuracy >= 0.9


# ----------------------------------------------------------------------------------- LRW


def test_lrw_layout_and_metadata(demo):
    root = demo["lrw"]
    assert root.name == "lipread_mp4"
    assert sorted(p.name for p in root.iterdir()) == sorted(syn.LRW_WORDS)
    for word in syn.LRW_WORDS:
        for split in ("train", "val", "test"):
            videos = sorted((root / word / split).glob("*.mp4"))
            n = syn.scaled(syn.LRW_COUNTS[split], SCALE)
            assert [v.name for v in videos] == [f"{word}_{i:05d}.mp4" for i in range(1, n + 1)]
            for video in videos:
                assert read_video(video).shape == (29, 96, 96, 3)
                lines = video.with_suffix(".txt").read_text().splitlines()
                assert lines[:2] == [f"Text:  {word}", "Conf:  4"]
                m = re.fullmatch(r"Duration: (\d\.\d\d) seconds", lines[2])
                assert m and 0 < float(m.group(1)) * 25 <= 29


def test_lrw_words_are_distinguishable(tmp_path):
    """Grayscale mouth region minus the neutral start, pooled 4x4, over the whole clip: same
    word closer than different words; nearest centroid recognises the word."""
    syn.build_lrw(tmp_path, seed=5, counts={"train": 6})
    groups: dict[str, list[np.ndarray]] = defaultdict(list)
    for video in sorted(tmp_path.glob("*/train/*.mp4")):
        gray = read_video(video).astype(np.float32).mean(-1)
        mouth = (gray - gray[:3].mean(0))[:, 40:84, 20:76]
        groups[video.parent.parent.name].append(
            normalise(mouth.reshape(29, 11, 4, 14, 4).mean(axis=(2, 4))))
    same, different, accuracy = class_separation(groups)
    assert same < 0.8 * different
    assert accuracy >= 0.85


# ----------------------------------------------------------------------------------- generator


def test_same_seed_gives_identical_bytes(demo, tmp_path):
    first = demo["grid"].parent
    second = tmp_path / "again"
    syn.generate(second, seed=0, scale=SCALE, log=None, workers=1)
    assert tree_hashes(second) == tree_hashes(first)
    other = syn.generate(tmp_path / "other", seed=1, only=["lrw"], scale=0.01, log=None)
    theirs, ours = tree_hashes(other["lrw"]), tree_hashes(demo["lrw"])
    assert theirs["ABOUT/train/ABOUT_00001.mp4"] != ours["ABOUT/train/ABOUT_00001.mp4"]


def test_complete_corpus_is_skipped(demo):
    messages: list[str] = []
    marker = demo["grid"] / syn.MARKER
    before = marker.stat().st_mtime_ns
    syn.generate(demo["grid"].parent, seed=0, scale=SCALE, log=messages.append)
    assert len(messages) == 3 and all("skipping" in m for m in messages)
    assert marker.stat().st_mtime_ns == before
    assert not list(demo["grid"].parent.glob("*.tmp"))


def test_main_only_rebuild_and_foreign_directories(tmp_path, capsys):
    args = ["--out", str(tmp_path), "--only", "lrw", "--scale", "0.01"]
    (tmp_path / "lrw.tmp").mkdir()  # left over by an interrupted run
    assert syn.main(args) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lrw"]
    assert "wrote" in capsys.readouterr().out
    assert syn.is_complete(tmp_path / "lrw", seed=0, scale=0.01)
    syn.main(args + ["--seed", "1"])  # other settings: the generated corpus is replaced
    assert "wrote" in capsys.readouterr().out and syn.is_complete(tmp_path / "lrw", 1, 0.01)
    (tmp_path / "grid").mkdir()
    (tmp_path / "grid" / "mine.txt").write_text("not generated")
    with pytest.raises(SystemExit):
        syn.main(["--out", str(tmp_path), "--only", "grid"])
    assert "not made by dataset.synthetic" in capsys.readouterr().err
    assert (tmp_path / "grid" / "mine.txt").exists()


def test_parse_only():
    assert syn.parse_only(None) == ["grid", "sign", "lrw"]
    assert syn.parse_only(["lrw,grid"]) == ["grid", "lrw"]
    assert syn.parse_only(["sign", "grid"]) == ["grid", "sign"]
    with pytest.raises(ValueError):
        syn.parse_only(["timit"])
