"""Sign language videos with gloss targets (Sign2Gloss): Phoenix-2014T, Phoenix-2014, CSL-Daily, own data.

Annotations are read by `load_annotations` (SLRT pickles, Phoenix corpus CSVs, JSON lines). Where a sample's
frames lie is `data.video.pattern` relative to `data.video.root`, a `str.format` pattern with the fields

    {split}  the split key: train, dev or test
    {name}   the sample name as the annotation gives it (``train/11August_2010_Wednesday_tagesschau-1``)
    {id}     the name without a leading ``<split>/`` (``11August_2010_Wednesday_tagesschau-1``)
    {video}  the annotation's video field (Phoenix CSVs, Phoenix-2014 pickles, JSON lines), a trailing
             ``/*.png`` dropped, so that it names the frame folder

giving any `dataset.video.open_video` spec: ``videos/{name}.mp4``, ``fullFrame-210x260px/{name}``,
``{split}.zip@images/{id}/images%04d.png``. Every problem with one sample is a `DataError` from
`__getitem__` that starts with ``sample <name>:``, so that `data.skip_bad_samples` can skip and count it.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dataset.loader import seed_of
from dataset.annotations import SignSample, gloss_vocabulary, load_annotations, oov_rate
from dataset.transforms import temporal_indices
from dataset.video import VideoSource, open_video, resize_frames
from dataset.vocab import BLANK, Vocabulary
from utils.errors import DataError

log = logging.getLogger(__name__)


class SignDataset(torch.utils.data.Dataset):
    """Samples: dict(index, name, video 3 x T x H x W uint8 RGB with T a multiple of 4, text (the normalised
    gloss sequence), labels (its vocabulary ids), translation (spoken-language text or None)).

    The vocabulary is `vocab` when given (share the train split's with dev and test), else SLRT's gloss2ids
    (`data.gloss2ids`), else the glosses of the train split.
    """

    def __init__(self, data_cfg: dict[str, Any], split: str, train: bool, seed: int,
                 vocab: Vocabulary | None = None) -> None:
        self.cfg = data_cfg
        self.split = split
        self.train = train
        self.seed = seed
        self.epoch = 0
        self.samples: list[SignSample] = load_annotations(data_cfg[split])
        if vocab is None:
            gloss2ids = data_cfg["gloss2ids"]
            train_samples = () if gloss2ids is not None else (
                self.samples if split == "train" else load_annotations(data_cfg["train"]))
            vocab = gloss_vocabulary(train_samples, gloss2ids)
        self.vocab = vocab
        self._known = set(vocab.tokens) - {BLANK, vocab.unk}
        self.num_frames: list[int | None] = [s.num_frames for s in self.samples]
        log.info("%s: %d samples, OOV %.2f%%", split, len(self.samples), oov_rate(self.samples, vocab))

    def __len__(self) -> int:
        return len(self.samples)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def name(self, index: int) -> str:
        return self.samples[index].name

    def target(self, index: int) -> tuple[str, torch.Tensor]:
        """The normalised gloss sequence of a sample and its vocabulary ids; reads no video."""
        sample = self.samples[index]
        if sample.gloss is None:
            raise DataError(f"sample {sample.name}: the annotation has no gloss")
        text = sample.target_gloss
        unknown = sorted(set(text.split()) - self._known)
        if unknown:
            raise DataError(f"sample {sample.name}: glosses {unknown} are not in the gloss vocabulary")
        return text, torch.tensor(self.vocab.encode(text), dtype=torch.long)

    def video_spec(self, index: int) -> str:
        """The `open_video` spec of a sample's frames."""
        sample, pattern = self.samples[index], self.cfg["video"]["pattern"]
        if self.cfg["video"]["root"] is None:
            raise DataError(f"sample {sample.name}: data.video.root is not set; name the folder the videos lie in")
        if sample.video is None and "{video}" in pattern:
            raise DataError(f"sample {sample.name}: data.video.pattern {pattern!r} uses {{video}}, "
                            "but the annotation gives no video")
        video = sample.video
        if video is not None and "*" in video.rpartition("/")[2]:
            video = video.rpartition("/")[0]
        name_id = sample.name.removeprefix(f"{self.split}/")
        spec = pattern.format(split=self.split, name=sample.name, id=name_id, video=video)
        return str(Path(self.cfg["video"]["root"]) / spec)

    def frames(self, index: int) -> torch.Tensor:
        """A sample's frames, 3 x T x H x W uint8 RGB (resampled in time in training)."""
        name, spec = self.name(index), self.video_spec(index)
        try:
            source = open_video(spec)
            frames = source.read(self._frame_indices(index, source))
        except DataError as err:  # names the file; the sample is added here
            raise DataError(f"sample {name}: {err}") from None
        return _clip_tensor(frames, self.cfg["input"]["frame_size"])

    def __getitem__(self, index: int) -> dict[str, Any]:
        text, labels = self.target(index)
        return {
            "index": index,
            "name": self.name(index),
            "video": self.frames(index),
            "text": text,
            "labels": labels,
            "translation": self.samples[index].text,
        }

    def _frame_indices(self, index: int, source: VideoSource) -> list[int]:
        """Every frame (evenly thinned to the cap), or in training a temporal resampling of them. A draw
        shorter than `min_frames` falls back to every frame, so a usable clip never fails at random."""
        max_frames, min_frames = self.cfg["input"]["max_frames"], self.cfg["min_frames"]
        indices = _eval_indices(source, max_frames, min_frames)
        if self.train:
            generator = torch.Generator().manual_seed(seed_of(self.seed, self.epoch, self.split, index))
            t = self.cfg["temporal"]
            drawn = temporal_indices(source.num_frames, True, t["tmin"], t["tmax"], max_frames, generator)
            indices = drawn if len(drawn) >= min_frames else indices
        return indices


def read_eval_clip(spec: str, data_cfg: dict[str, Any]) -> torch.Tensor:
    """The frames of an `open_video` spec as SignDataset gives them in evaluation (its `data_cfg`)."""
    source = open_video(spec)
    frames = source.read(_eval_indices(source, data_cfg["input"]["max_frames"], data_cfg["min_frames"]))
    return _clip_tensor(frames, data_cfg["input"]["frame_size"])


def _eval_indices(source: VideoSource, max_frames: int, min_frames: int) -> list[int]:
    indices = temporal_indices(source.num_frames, train=False, max_frames=max_frames)
    if len(indices) < min_frames:
        raise DataError(f"{source.name}: {len(indices)} frames after sampling, fewer than "
                        f"data.min_frames {min_frames} (the frontend's temporal receptive field)")
    return indices


def _clip_tensor(frames: np.ndarray, size: list[int] | None) -> torch.Tensor:
    """T x H x W x 3 frames, resized to `size` (height, width) when given, as 3 x T x H x W."""
    if size is not None and list(frames.shape[1:3]) != list(size):
        frames = resize_frames(frames, tuple(size))
    return torch.from_numpy(frames).permute(3, 0, 1, 2)
