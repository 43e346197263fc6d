"""Datasets by task: `build_dataset(cfg, split, train)` maps a validated config to a Dataset."""
from __future__ import annotations

from typing import Any

import torch


def build_dataset(cfg: dict[str, Any], split: str, train: bool = False) -> torch.utils.data.Dataset:
    """The `split` ('train', 'dev' or 'test') of the task's corpus; `train` turns augmentation on."""
    if cfg["task"] == "lip_sentence":
        from dataset.grid import GridDataset

        return GridDataset(cfg["data"], split, train=train, seed=cfg["training"]["random_seed"])
    raise ValueError(f"no dataset for task {cfg['task']!r}")
