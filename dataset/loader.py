"""Batching for training and evaluation across ranks: samplers, padding collate, data loaders.

Training batches are cut from one per-epoch permutation into *global* batches of
`batch_size x world_size` samples, and rank r takes the r-th slice of each. The samples a step sees
are therefore the same for 1 process with batch 2b as for 2 processes with batch b, and a run can
resume at any batch of an epoch. Evaluation gives every sample to exactly one rank, with no padding.
"""
from __future__ import annotations

import hashlib

from typing import Any, Iterator, Sequence

import torch

from utils.errors import ConfigError, DataError, UserError


def seed_of(*parts: object) -> int:
    """A 64-bit seed that depends only on `parts` (e.g. seed, epoch, split, sample): the same in every
    loader worker and process layout, different for every combination."""
    key = "/".join(map(str, parts)).encode()
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little")


class TrainBatchSampler(torch.utils.data.Sampler[list[int]]):
    def __init__(
        self,
        lengths: Sequence[int],
        batch_size: int,
        rank: int,
        world_size: int,
        seed: int,
        shuffle: bool = True,
        bucket: bool = False,
        multiple_of: int = 1,
    ) -> None:
        self.lengths = list(lengths)
        self.batch_size = batch_size
        self.rank = rank
        self.world_size = world_size
        self.seed = seed
        self.shuffle = shuffle
        self.bucket = bucket
        self.multiple_of = multiple_of  # gradient accumulation: an epoch holds whole optimizer steps
        self.epoch = 0
        self.start_batch = 0
        self.global_batch = batch_size * world_size
        if bucket and None in self.lengths:
            raise ConfigError("training.length_bucketing needs every training sample's frame count; "
                              "these annotations lack some (use SLRT pickles, or num_frames in JSON lines)")
        if self.batches_per_epoch == 0:
            raise UserError(
                f"the training split has {len(self.lengths)} samples, fewer than one optimizer step needs "
                f"(training.batch_size {batch_size} x {world_size} processes x {multiple_of} accumulated)"
            )

    @property
    def batches_per_epoch(self) -> int:
        return len(self.lengths) // self.global_batch // self.multiple_of * self.multiple_of

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Select the epoch's permutation and skip the first `start_batch` batches (on resume)."""
        self.epoch, self.start_batch = epoch, start_batch

    def __len__(self) -> int:
        return self.batches_per_epoch - self.start_batch

    def global_batches(self) -> list[list[int]]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        n = len(self.lengths)
        order = torch.randperm(n, generator=generator).tolist() if self.shuffle else list(range(n))
        if self.bucket:
            # Sort within large chunks so batches hold similar lengths, then shuffle the batch order.
            chunk = self.global_batch * 50
            order = [i for s in range(0, n, chunk) for i in sorted(order[s:s + chunk], key=self.lengths.__getitem__)]
        size = self.global_batch
        batches = [order[s:s + size] for s in range(0, self.batches_per_epoch * size, size)]
        if self.bucket and self.shuffle:
            batches = [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        lo, hi = self.rank * self.batch_size, (self.rank + 1) * self.batch_size
        for batch in self.global_batches()[self.start_batch:]:
            yield batch[lo:hi]


def eval_batches(num_samples: int, batch_size: int, rank: int, world_size: int) -> list[list[int]]:
    """Rank r scores samples r, r + world, ...: each sample exactly once, whatever the split size."""
    mine = list(range(rank, num_samples, world_size))
    return [mine[s:s + batch_size] for s in range(0, len(mine), batch_size)]


class ReportingDataset(torch.utils.data.Dataset):
    """Turns an unreadable sample into its one-line message, so that the training process (not a
    loader worker) decides to stop or to skip it, and every rank learns of it."""

    def __init__(self, dataset: torch.utils.data.Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Any] | str:
        try:
            return self.dataset[index]
        except DataError as err:
            prefix = f"sample {self.dataset.name(index)}: "
            return str(err) if str(err).startswith(prefix) else prefix + str(err)


def collate(samples: list[dict[str, Any] | str]) -> dict[str, Any]:
    """Pad videos along time to the longest in the batch; CTC targets concatenated with lengths; per-frame
    `boundary` values (LRW's word boundary) padded like the videos.

    Unreadable samples are left out and their messages listed under `bad`.
    """
    good, batch = start_batch(samples)
    if good:
        batch.update(pad_videos(good), **ctc_targets(good))
        if "boundary" in good[0]:
            batch["boundary"] = torch.nn.utils.rnn.pad_sequence([s["boundary"] for s in good], batch_first=True)
    return batch


def pad_videos(good: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """`video` (B x C x T x H x W, zero-padded in time) and `video_lengths` of samples holding 'video'."""
    lengths = torch.tensor([s["video"].shape[1] for s in good])
    channels, _, height, width = good[0]["video"].shape
    for s in good[1:]:
        if s["video"].shape[2:] != (height, width):
            raise DataError(f"samples {good[0]['name']} ({height} x {width}) and {s['name']} "
                            f"({s['video'].shape[2]} x {s['video'].shape[3]}) have frames of different sizes "
                            "and cannot share a batch; set data.input.frame_size: [height, width]")
    video = good[0]["video"].new_zeros(len(good), channels, int(lengths.max()), height, width)
    for i, s in enumerate(good):
        video[i, :, : s["video"].shape[1]] = s["video"]
    return {"video": video, "video_lengths": lengths}


def ctc_targets(good: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """CTC `labels` (every sample's concatenated) and `label_lengths`."""
    return {"labels": torch.cat([s["labels"] for s in good]),
            "label_lengths": torch.tensor([len(s["labels"]) for s in good])}


def start_batch(samples: list[dict[str, Any] | str]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The readable samples, and a batch holding what every task's batch has: the messages of the unreadable
    ones (`bad`), `size`, and each readable sample's `text`, `name` and `index`. Collate functions add tensors."""
    good = [s for s in samples if not isinstance(s, str)]
    batch: dict[str, Any] = {"bad": [s for s in samples if isinstance(s, str)], "size": len(good)}
    if good:
        batch.update(text=[s["text"] for s in good], name=[s["name"] for s in good], index=[s["index"] for s in good])
    return good, batch


def make_loader(
    dataset: torch.utils.data.Dataset, batch_sampler: Any, num_workers: int, seed: int
) -> torch.utils.data.DataLoader:
    """A loader over `ReportingDataset(dataset)`; `seed` seeds the workers (vary it by epoch and rank)."""
    # A private generator: creating a loader must not draw from the global RNG, or a resumed run's
    # dropout masks would drift from the uninterrupted run's.
    generator = torch.Generator()
    generator.manual_seed(seed)
    return torch.utils.data.DataLoader(
        ReportingDataset(dataset),
        batch_sampler=batch_sampler,
        num_workers=num_workers,
        collate_fn=getattr(dataset, "collate", collate),  # a dataset without videos batches its own way
        generator=generator,
    )
