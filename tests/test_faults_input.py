"""Bad input: damaged and unusual videos (real files), pickles and checkpoints carrying code, hostile YAML.

Every problem must reach the user as one line naming the file (or sample) and the problem, and code
carried by a file must never run: each payload would create a marker file if it ran.
"""
from __future__ import annotations

import gzip
import os
import pickle
import shutil
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from conftest import DEMO_CONFIG, EMA, entry_command, grid_opts, run
from dataset import build_dataset
from dataset.annotations import load_annotations
from dataset.loader import ReportingDataset, collate
from modelling import build_model
from test_sign_training import S2G_CONFIG, s2g_opts
from utils.config import load_config
from utils.errors import ConfigError, DataError


def write_video(path: Path, frames: int, height: int, width: int) -> None:
    """A real H.264 mp4 (4:4:4, so any frame size is allowed) whose frames change over time."""
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv444p"
        container.start_encoding()  # writes the header even when no frame follows
        for t in range(frames):
            image = np.full((height, width, 3), (7 * t) % 256, np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())


# what each damaged or unusual file is made of: bytes, or (frames, height, width) of a real video
VIDEOS: dict[str, bytes | tuple[int, int, int]] = {
    "truncated": b"",  # filled in from a real video of the corpus
    "empty": b"",
    "zero frames": (0, 32, 32),
    "text": b"this is not a video\n" * 50,
    "random bytes": np.random.default_rng(0).bytes(20000),
    "odd size 33 x 47": (5, 33, 47),
    "2 x 2 pixels": (3, 2, 2),
    "one frame": (1, 32, 32),
    "10,000 frames": (10_000, 32, 32),
}
# frames a usable video gives with the demo config (max_frames 75), or the message of an unusable one
EXPECTED: dict[str, int | str] = {
    "truncated": "cannot be decoded", "empty": "is empty (0 bytes)", "zero frames": "cannot be decoded",
    "text": "cannot be decoded", "random bytes": "cannot be decoded", "odd size 33 x 47": 5,
    "2 x 2 pixels": "cannot be decoded", "one frame": 1, "10,000 frames": 75,
}


@pytest.fixture(scope="module")
def odd_grid(grid_corpus, tmp_path_factory) -> tuple[dict, dict[str, int]]:
    """The demo GRID corpus with its first training videos replaced by VIDEOS; the config, and each kind's index."""
    corpus = tmp_path_factory.mktemp("odd") / "grid"
    shutil.copytree(grid_corpus, corpus)
    cfg = load_config(DEMO_CONFIG, grid_opts(corpus, corpus.parent / "run"))
    train = build_dataset(cfg, "train", train=True)
    indices = {}
    for index, (kind, content) in enumerate(VIDEOS.items()):
        path = train.video_path(index)
        if kind == "truncated":
            content = path.read_bytes()[:300]
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            write_video(path, *content)
        indices[kind] = index
    return cfg, indices


@pytest.mark.parametrize("kind", VIDEOS)
def test_each_damaged_or_unusual_video_gives_frames_or_one_line_naming_sample_and_file(odd_grid, kind):
    cfg, indices = odd_grid
    dataset = build_dataset(cfg, "train", train=True)
    item = ReportingDataset(dataset)[indices[kind]]  # what the training loop receives
    expected = EXPECTED[kind]
    if isinstance(expected, str):
        assert isinstance(item, str), kind
        assert item.startswith(f"sample {dataset.name(indices[kind])}: video {dataset.video_path(indices[kind])} ")
        assert expected in item and "\n" not in item, item
    else:
        height, width = cfg["data"]["input"]["height"], cfg["data"]["input"]["width"]
        assert item["video"].shape == (3, expected, height, width) and item["video"].dtype == torch.uint8


def test_a_one_frame_video_trains_with_its_ctc_target_counted_as_infeasible(odd_grid):
    cfg, indices = odd_grid
    dataset = build_dataset(cfg, "train", train=True)
    batch = collate([dataset[indices["one frame"]], dataset[indices["10,000 frames"]]])
    outputs = build_model(cfg, dataset.vocab)(batch)
    assert torch.isfinite(outputs["loss"]) and outputs["num_infeasible"] == 1


@pytest.fixture(scope="module")
def odd_sign(sign_corpus, tmp_path_factory) -> dict:
    """The demo sign corpus whose first three training videos are 33 x 47, one frame and 10,000 frames long."""
    corpus = tmp_path_factory.mktemp("odd") / "sign"
    shutil.copytree(sign_corpus, corpus)
    cfg = load_config(S2G_CONFIG, s2g_opts(corpus, corpus.parent / "run"))
    train = build_dataset(cfg, "train", train=True)
    for index, shape in enumerate([(8, 33, 47), (1, 32, 32), (10_000, 32, 32)]):
        write_video(Path(train.video_spec(index)), *shape)
    return cfg


def test_sign_videos_of_another_size_one_frame_or_10000_frames(odd_sign):
    train = build_dataset(odd_sign, "train", train=True)
    odd, usual = train[0], train[3]
    with pytest.raises(DataError) as err:  # frames are batched at their decoded size: sizes must agree
        collate([usual, odd])
    assert str(err.value) == (f"samples {usual['name']} (128 x 104) and {odd['name']} (33 x 47) have frames of "
                              "different sizes and cannot share a batch; set data.input.frame_size: [height, width]")
    one = train[1]["video"]
    assert one.shape[1] == 4 and (one == one[:, :1]).all()  # the frame repeated to S3D's multiple of 4
    assert train[2]["video"].shape[1] <= odd_sign["data"]["input"]["max_frames"]


class RunsCode:
    """Unpickling this runs `touch marker`."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_training_refuses_an_annotation_pickle_carrying_code_and_the_code_never_runs(sign_corpus, tmp_path):
    marker = tmp_path / "marker"
    evil = tmp_path / "evil.train"
    evil.write_bytes(gzip.compress(pickle.dumps([{"name": "train/x", "gloss": "A", "text": "a .",
                                                  "num_frames": 8, "sign": RunsCode(marker)}])))
    opts = s2g_opts(sign_corpus, tmp_path / "run", **{"data.train": evil})
    result = run(entry_command("training.py", opts, config=S2G_CONFIG), check=False)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: annotation file {evil}: refused to load '{os.system.__module__}.system': "
        "only plain data and tensors are allowed")
    assert not marker.exists()


def test_an_annotation_value_of_a_billion_items_from_300_bytes_is_refused_in_one_short_line(tmp_path):
    value = ["x"] * 10
    for _ in range(8):
        value = [value] * 10  # pickle stores each level once, and refers to it ten times
    path = tmp_path / "bomb.train"
    path.write_bytes(pickle.dumps([{"name": "train/x", "gloss": "A", "text": "a .", "num_frames": value}]))
    with pytest.raises(DataError) as err:
        load_annotations(path)
    assert str(err.value).startswith(f"annotation file {path}: entry 0 ('train/x'): key 'num_frames' is list [[")
    assert len(str(err.value)) < 300


def test_checkpoints_carrying_code_are_passed_over_on_resume_and_refused_by_prediction(undisturbed_run,
                                                                                        grid_corpus, tmp_path):
    marker = tmp_path / "marker"
    model_dir = tmp_path / "run"
    shutil.copytree(undisturbed_run / "ckpts", model_dir / "ckpts")
    evil = model_dir / "ckpts" / "step_999.ckpt"
    torch.save({"model": RunsCode(marker), "state": {"step": 999}}, evil)
    opts = grid_opts(grid_corpus, model_dir, **EMA)
    resumed = run(entry_command("training.py", opts))
    assert f"skipping unusable checkpoint: checkpoint {evil} cannot be loaded safely" in resumed.stdout
    predicted = run(entry_command("prediction.py", opts + ["--ckpt", str(evil)]), check=False)
    assert predicted.returncode == 2
    message = predicted.stderr.strip().splitlines()[-1]
    assert message == (f"error: checkpoint {evil} cannot be loaded safely: it refers to {os.system.__module__}.system, "
                       "and a checkpoint may hold only tensors and plain containers")
    assert not marker.exists()


GRID_YAML = "task: lip_sentence\ndata: {{root: {root}, train: {root}/train.txt, dev: {root}/dev.txt}}\n" \
            "training:\n  model_dir: {root}/out\n  total_epoch: 1\n  optimization:\n" \
            "    learning_rate: {{default: 0.001}}\n"
# What hostile or wrong YAML holds, and what the one-line error says about it.
HOSTILE_YAML = {
    "object/apply": ("    x: !!python/object/apply:os.system ['touch {marker}']\n", "not valid YAML: could not "
                     "determine a constructor for the tag 'tag:yaml.org,2002:python/object/apply:os.system'"),
    "object/new": ("    x: !!python/object/new:os.system ['touch {marker}']\n", "not valid YAML"),
    "name": ("    x: !!python/name:os.system\n", "not valid YAML"),
    "module": ("    x: !!python/module:os\n", "not valid YAML"),
    "recursive alias": ("    betas: &loop [*loop, 0.9]\n",
                        "key 'training.optimization.betas[0]' must be float, got [[[[...], 0.9], 0.9], 0.9]"),
    "alias bomb": ("    betas: [[&a0 [x, x, x, x, x, x, x, x, x, x], " + ", ".join(
        f"&a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)) + "], 0.9]\n",
        "key 'training.optimization.betas[0]' must be float, got [['x', 'x', 'x', 'x', 'x', 'x', ...], "),
    "timestamp": ("    warmup_epochs: 2024-01-01\n",
                  "key 'training.optimization.warmup_epochs' must be float, got datetime.date(2024, 1, 1)"),
    "binary": ("    optimizer: !!binary QWRhbQ==\n", "key 'training.optimization.optimizer' must be str, got b'Adam'"),
    "seed torch cannot take": ("  random_seed: 18446744073709551616\n",
                               "key 'training.random_seed' is 18446744073709551616, expected at most 4294967295"),
}


@pytest.mark.parametrize("case", HOSTILE_YAML)
def test_hostile_yaml_is_refused_in_one_short_line_naming_file_and_key(tmp_path, case):
    for split in ("train", "dev"):
        (tmp_path / f"{split}.txt").write_text("s1/abc\n")
    marker = tmp_path / "marker"
    text, message = HOSTILE_YAML[case]
    path = tmp_path / "hostile.yaml"
    path.write_text(GRID_YAML.format(root=tmp_path) + text.format(marker=marker))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value).startswith(f"{path}: {message}"), str(err.value)
    assert len(str(err.value)) < 1000 and "\n" not in str(err.value)  # the alias bomb holds 10**9 strings
    assert not marker.exists()
