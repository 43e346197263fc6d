"""LRW word clips as users have them: `lipread_mp4/<WORD>/{train,val,test}/<WORD>_00001.mp4` with a `.txt`
beside each (its `Duration: 0.44 seconds` line is the word's length; LRW centres the word in its clip),
or preprocessed crops `<root>/<WORD>/<split>/<WORD>_00001.npz` whose `data` is T x 96 x 96 uint8 grey.

The classes are the sorted word folder names under the root (the first `data.words` of them, or the
`data.words_list` words); the training split's list travels in the checkpoint.
"""
from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dataset.loader import seed_of
from dataset.video import read_video, resize_frames, sample_indices
from dataset.vocab import WordClasses
from utils.errors import ConfigError, DataError, one_line

FPS = 25
_DURATION = re.compile(r"^\s*Duration:\s*([0-9]*\.?[0-9]+)\s*seconds?\s*$", re.IGNORECASE | re.MULTILINE)
_GREY = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R 601, as OpenCV's BGR2GRAY


def word_classes(root: Path, words: int | None, words_list: list[str] | None) -> WordClasses:
    """The sorted word folders under `root` (hidden ones aside): all, the first `words`, or exactly `words_list`."""
    folders = root.iterdir() if root.is_dir() else []
    found = sorted(p.name for p in folders if p.is_dir() and not p.name.startswith("."))
    if not found:
        raise ConfigError(f"data.root {root}: expected one folder per word (<WORD>/train/...), found none")
    if words_list is not None:
        missing = sorted(set(words_list) - set(found))
        if missing:
            raise ConfigError(f"data.words_list: {missing[:10]} have no folder under {root}")
        if len(set(words_list)) != len(words_list):
            raise ConfigError("data.words_list names a word twice")
        return WordClasses(tuple(sorted(words_list)))
    if words is not None and words > len(found):
        raise ConfigError(f"data.words is {words}, but {root} holds {len(found)} word folders")
    return WordClasses(tuple(found[:words]))


def read_duration(path: Path) -> float:
    """The word's duration in seconds from an LRW `.txt` file (its `Duration: 0.44 seconds` line)."""
    try:
        text = path.read_text(errors="replace")
    except OSError as err:
        raise DataError(f"metadata {path} cannot be read: {err.strerror or one_line(err)}") from None
    found = _DURATION.search(text)
    if found is None:
        raise DataError(f"metadata {path}: no 'Duration: <seconds> seconds' line")
    return float(found.group(1))


def word_boundary(duration: float, num_frames: int, fps: float = FPS) -> np.ndarray:
    """1 on the frames the word covers, 0 elsewhere: the word is centred in the clip, with a frame of margin."""
    half = int(duration * fps / 2)
    centre = (num_frames - 1) // 2
    boundary = np.zeros(num_frames, dtype=np.float32)
    boundary[max(0, centre - half - 1): min(num_frames, centre + half + 2)] = 1.0
    return boundary


def read_npz(path: Path) -> np.ndarray:
    """The `data` array of a preprocessed crop file: T x H x W uint8 grey levels."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            if "data" not in archive.files:
                raise DataError(f"crops {path}: no 'data' array (it holds {sorted(archive.files)})")
            data = archive["data"]
    except DataError:
        raise
    except (OSError, ValueError) as err:  # missing, truncated, not a zip, or an object array
        raise DataError(f"crops {path} cannot be read: {one_line(err, 200)}") from None
    if data.ndim != 3 or data.dtype != np.uint8 or 0 in data.shape:
        raise DataError(f"crops {path}: 'data' is {data.dtype} {tuple(data.shape)}, expected uint8 T x H x W")
    return data


class LrwDataset(torch.utils.data.Dataset):
    """Samples: dict(index, name, video C x T x S x S uint8 (S = crop_size), text (the word), labels [class],
    and boundary T floats with data.word_boundary)."""

    def __init__(self, data_cfg: dict[str, Any], split: str, train: bool, seed: int, in_channels: int,
                 vocab: WordClasses | None = None) -> None:
        self.cfg, self.split, self.train, self.seed, self.in_channels = data_cfg, split, train, seed, in_channels
        self.epoch = 0
        inp = data_cfg["input"]
        if inp["crop_size"] > inp["frame_size"]:
            raise ConfigError(f"data.input.crop_size {inp['crop_size']} is larger than data.input.frame_size "
                              f"{inp['frame_size']}")
        if data_cfg["format"] == "npz" and in_channels != 1:
            raise ConfigError("data.format npz holds grey crops: set model.EfLip.in_channels: 1")
        self.root = Path(data_cfg["root"])
        self.vocab = vocab or word_classes(self.root, data_cfg["words"], data_cfg["words_list"])
        folder, suffix = data_cfg[split], "." + data_cfg["format"]
        self.files: list[Path] = []
        for word in self.vocab.words:
            split_dir = self.root / word / folder
            if not split_dir.is_dir():
                raise DataError(f"{split_dir} does not exist (data.{split} names the split folder '{folder}')")
            self.files += sorted(p for p in split_dir.iterdir() if p.name.startswith(word + "_") and p.suffix == suffix)
        if not self.files:
            raise DataError(f"no {suffix} files under {self.root}/<WORD>/{folder}/ for the {len(self.vocab)} words")
        self.num_frames = [None] * len(self.files)  # all LRW clips are 29 frames: nothing to bucket

    def __len__(self) -> int:
        return len(self.files)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def word(self, index: int) -> str:
        return self.files[index].parent.parent.name

    def name(self, index: int) -> str:
        path = self.files[index]
        return f"{self.word(index)}/{path.parent.name}/{path.stem}"

    def frames(self, index: int) -> np.ndarray:
        """T x S x S x C uint8, S = data.input.frame_size, C = model.EfLip.in_channels."""
        path, inp = self.files[index], self.cfg["input"]
        if self.cfg["format"] == "npz":
            frames = read_npz(path)[..., None]
            frames = frames[sample_indices(len(frames), inp["max_frames"])]
        else:
            frames = read_video(path, max_frames=inp["max_frames"])
        return square_frames(frames, inp, self.in_channels, path)

    def __getitem__(self, index: int) -> dict[str, Any]:
        frames = self.frames(index)
        crop, (height, width) = self.cfg["input"]["crop_size"], frames.shape[1:3]
        rng = random.Random(seed_of(self.seed, self.epoch, self.split, index))  # the same in every worker layout
        aug = self.cfg["augmentation"]
        if self.train:
            top, left = rng.randint(0, height - crop), rng.randint(0, width - crop)
            frames = frames[:, top: top + crop, left: left + crop]
        else:
            frames = centre_crop(frames, crop)
        if self.train and rng.random() < aug["horizontal_flip"]:
            frames = frames[:, :, ::-1]
        if self.train and aug["time_mask"]:
            length = rng.randint(0, min(aug["time_mask"], len(frames)))
            start = rng.randint(0, len(frames) - length)
            frames = frames.copy()
            frames[start: start + length] = frames.mean(axis=0).round().astype(np.uint8)
        word = self.word(index)
        sample = {
            "index": index,
            "name": self.name(index),
            "video": channels_first(frames),
            "text": word,
            "labels": torch.tensor([self.vocab.encode(word, where=str(self.files[index]))]),
        }
        if self.cfg["word_boundary"]:
            metadata = Path(self.cfg["metadata_root"] or self.root) / self.name(index)
            sample["boundary"] = torch.from_numpy(word_boundary(read_duration(metadata.with_suffix(".txt")),
                                                                len(frames)))
        return sample


def square_frames(frames: np.ndarray, input_cfg: dict[str, Any], in_channels: int, where: str | Path,
                  roi: bool = True) -> np.ndarray:
    """T x H x W x C uint8 frames as EfLip's datasets give them before cropping: `data.input.roi` cut (unless
    `roi` is false), grey when `in_channels` is 1, resized to `frame_size` square. T x S x S x in_channels."""
    if roi and input_cfg["roi"] is not None:
        top, left, height, width = input_cfg["roi"]
        if top + height > frames.shape[1] or left + width > frames.shape[2]:
            raise DataError(f"{where}: frames are {frames.shape[1]} x {frames.shape[2]}, smaller than "
                            f"data.input.roi {input_cfg['roi']}")
        frames = frames[:, top: top + height, left: left + width]
    if in_channels == 1 and frames.shape[-1] == 3:
        frames = np.round(frames.astype(np.float32) @ _GREY).astype(np.uint8)[..., None]
    size = input_cfg["frame_size"]
    if frames.shape[1:3] == (size, size):
        return frames
    return resize_frames(np.ascontiguousarray(frames), (size, size))


def centre_crop(frames: np.ndarray, crop: int) -> np.ndarray:
    top, left = (frames.shape[1] - crop) // 2, (frames.shape[2] - crop) // 2
    return frames[:, top: top + crop, left: left + crop]


def channels_first(frames: np.ndarray) -> torch.Tensor:
    """T x H x W x C frames as the C x T x H x W tensor a sample holds."""
    return torch.from_numpy(np.ascontiguousarray(frames)).permute(3, 0, 1, 2)


def read_user_video(spec: str, cfg: dict[str, Any], crop_mouth: str = "auto") -> dict[str, torch.Tensor]:
    """A video of the user's (an `open_video` spec) as evaluation reads an LRW clip: `video`, and `boundary` when
    the model takes one. Frames that are not a mouth crop already go through mouth-ROI preprocessing first
    (`dataset.preprocess_lip.read_user_frames`), which then stands in for `data.input.roi`.

    The boundary comes from an LRW `.txt` beside the video, as evaluation reads it; without one the whole clip
    is taken to be the word (a user's clip of one word holds nothing else)."""
    from dataset.preprocess_lip import read_user_frames

    inp, size = cfg["data"]["input"], cfg["data"]["input"]["frame_size"]
    frames, cropped = read_user_frames(spec, (size, size), inp["max_frames"], crop_mouth)
    frames = centre_crop(square_frames(frames, inp, cfg["model"]["EfLip"]["in_channels"], spec, roi=not cropped),
                         inp["crop_size"])
    sample = {"video": channels_first(frames)}
    if cfg["data"]["word_boundary"]:
        metadata = Path(spec).with_suffix(".txt")
        boundary = (word_boundary(read_duration(metadata), len(frames)) if metadata.is_file()
                    else np.ones(len(frames), dtype=np.float32))
        sample["boundary"] = torch.from_numpy(boundary)
    return sample
