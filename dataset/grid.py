"""GRID sentences for LipNet: split lists, `.align` transcripts, and the videos they name.

A split list holds one sample per line as `speaker/id` (longer paths such as LipNet-PyTorch's
`s1/video/mpg_6000/bbaf2n` work too: the first part is the speaker, the last the id). Where the videos
and alignments lie is given by patterns relative to `data.root`, e.g. `{speaker}/{id}.mpg` and
`GRID_align_txt/{speaker}/align/{id}.align`, so each of GRID's distributed layouts can be pointed at
directly. A video pattern may name anything `dataset.video.open_video` reads: the raw `.mpg` files,
LipNet-PyTorch's folders of numbered jpg mouth frames (`lip/{speaker}/video/mpg_6000/{id}`) or the
`.npz` crops of `python -m dataset.preprocess_lip`.
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dataset.loader import seed_of
from dataset.video import read_video, resize_frames
from dataset.vocab import Vocabulary, grid_characters
from utils.errors import DataError

SILENCE = {"sil", "sp"}
FRAME_UNITS = 1000  # GRID alignment times count 1000 units per video frame


def read_split_list(path: str | Path) -> list[tuple[str, str]]:
    if not Path(path).is_file():
        raise DataError(f"split list {path} is not a file")
    entries = []
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        parts = line.strip().strip("/").split("/")
        if not line.strip():
            continue
        if len(parts) < 2:
            raise DataError(f"{path}:{number}: expected 'speaker/id', got {line.strip()!r}")
        entries.append((parts[0], parts[-1]))
    if not entries:
        raise DataError(f"split list {path} names no samples")
    return entries


def read_alignment(path: Path) -> tuple[str, int]:
    """The sentence (upper case, silences dropped) and the frame count an `.align` file covers."""
    if not path.is_file():
        raise DataError(f"alignment {path} does not exist")
    words, end = [], 0
    for number, line in enumerate(path.read_text().splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 3 or not (parts[0].isdigit() and parts[1].isdigit()):
            raise DataError(f"{path}:{number}: expected 'start end word', got {line!r}")
        end = max(end, int(parts[1]))
        if parts[2] not in SILENCE:
            words.append(parts[2].upper())
    if not words:
        raise DataError(f"alignment {path} holds no words")
    return " ".join(words), max(1, round(end / FRAME_UNITS))


class GridDataset(torch.utils.data.Dataset):
    """Samples: dict(index, name, video C x T x H x W uint8 in `data.input.channel_order`, text, labels).

    Frames stay uint8 through the loader (a quarter of the bytes); the model scales them on its device.
    """

    def __init__(self, data_cfg: dict[str, Any], split: str, train: bool, seed: int) -> None:
        self.cfg = data_cfg
        self.split = split
        self.train = train
        self.seed = seed
        self.epoch = 0
        self.vocab: Vocabulary = grid_characters()
        self.root = Path(data_cfg["root"])
        self.entries = read_split_list(data_cfg[split])
        self.texts, self.num_frames = [], []
        for speaker, vid in self.entries:
            text, frames = read_alignment(self.root / data_cfg["align_pattern"].format(speaker=speaker, id=vid))
            self.vocab.encode(text, where=f"{speaker}/{vid}")
            self.texts.append(text)
            self.num_frames.append(frames)

    def __len__(self) -> int:
        return len(self.entries)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def name(self, index: int) -> str:
        return "/".join(self.entries[index])

    def video_path(self, index: int) -> Path:
        speaker, vid = self.entries[index]
        return self.root / self.cfg["video_pattern"].format(speaker=speaker, id=vid)

    def __getitem__(self, index: int) -> dict[str, Any]:
        inp = self.cfg["input"]
        video = lip_input(read_video(self.video_path(index), max_frames=inp["max_frames"]), inp)
        if self.train and self._rng(index).random() < self.cfg["augmentation"]["horizontal_flip"]:
            video = video.flip(-1)
        text = self.texts[index]
        return {
            "index": index,
            "name": self.name(index),
            "video": video,
            "text": text,
            "labels": torch.tensor(self.vocab.encode(text), dtype=torch.long),
        }

    def _rng(self, index: int) -> random.Random:
        # Augmentation draws depend only on (seed, epoch, sample), never on worker or process layout.
        return random.Random(seed_of(self.seed, self.epoch, self.split, index))


def lip_input(frames: np.ndarray, input_cfg: dict[str, Any]) -> torch.Tensor:
    """T x H x W x 3 uint8 RGB frames as LipNet reads them (`data.input`): C x T x height x width uint8, in
    `channel_order`."""
    size = (input_cfg["height"], input_cfg["width"])
    if tuple(frames.shape[1:3]) != size:
        frames = resize_frames(frames, size)
    video = torch.from_numpy(frames).permute(3, 0, 1, 2)
    return video.flip(0) if input_cfg["channel_order"] == "BGR" else video


def read_user_video(spec: str, input_cfg: dict[str, Any], crop_mouth: str = "auto") -> torch.Tensor:
    """A video of the user's (an `open_video` spec) as LipNet reads it, mouth-cropped first where it needs it
    (`dataset.preprocess_lip.read_user_frames`)."""
    from dataset.preprocess_lip import read_user_frames

    size = (input_cfg["height"], input_cfg["width"])
    return lip_input(read_user_frames(spec, size, input_cfg["max_frames"], crop_mouth)[0], input_cfg)
