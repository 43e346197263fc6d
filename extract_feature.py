"""Cache the features of a trained Sign2Gloss model for Sign2Text: `python extract_feature.py --config S2T_FILE`.

Runs `model.RecognitionNetwork.load_ckpt` over the videos of every split and writes `data.feature_cache`
(layout in dataset/feature_cache.py): its frontend's features for `data.input_type: feature`, its frontend
and VisualHead's outputs (gloss features and logits) for `head_feature`. Under torchrun each rank takes every
world_size-th sample and writes its own files; samples already cached are skipped, so a stopped run
continues where it stopped; rank 0 then writes each split's index. Every clip is run alone and as in
evaluation (centre crop, every frame up to `data.input.max_frames`): a feature never depends on which
clips would have shared its batch.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from dataset import sign_dataset_cfg
from dataset.feature_cache import cache_level, claim, expected_meta, sample_file, write_index, write_sample
from dataset.sign import SignDataset
from dataset.sign_translation import recognition_glosses
from modelling import spatial_augmentation
from modelling.recognition import RecognitionNetwork
from utils.cli import base_parser, run_main
from utils.config import load_config
from utils.distributed import DistInfo, all_reduce_sum, gather_objects, init_distributed, shutdown
from utils.errors import ConfigError, DataError
from utils.logging import setup_logging

log = logging.getLogger("extract_feature")


def main(argv: Sequence[str] | None = None) -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--splits", nargs="+", default=["train", "dev", "test"])
    parser.add_argument("--dtype", choices=("float16", "float32"), default="float16",
                        help="storage type of the features (float16 halves the disk and memory)")
    args = parser.parse_args(argv)
    cfg = load_config(args.config, args.opts)
    dist = init_distributed()
    try:
        setup_logging(None, dist.is_main)
        extract(cfg, args.splits, args.dtype, dist)
    finally:
        shutdown()


def extract(cfg: dict[str, Any], splits: Sequence[str], dtype: str, dist: DistInfo) -> dict[str, int]:
    """Cache every readable sample of `splits`; returns the number of samples indexed per split."""
    data, network = cfg["data"], cfg["model"]["RecognitionNetwork"]
    if cfg["task"] != "S2T":
        raise ConfigError(f"task {cfg['task']!r}: extract_feature.py reads a Sign2Text config (task S2T), whose "
                          "model.RecognitionNetwork.load_ckpt names the trained Sign2Gloss checkpoint")
    if not network["load_ckpt"] or not data["feature_cache"]:
        raise ConfigError("extract_feature.py needs model.RecognitionNetwork.load_ckpt (the trained Sign2Gloss "
                          "checkpoint) and data.feature_cache (the folder to write)")
    level = cache_level(cfg)
    glosses = recognition_glosses(cfg)
    model = RecognitionNetwork({**network, "augmentation": spatial_augmentation(cfg)}, len(glosses))
    model.to(dist.device).eval()
    cache_dir = Path(data["feature_cache"])
    meta = {**expected_meta(cfg), "dtype": dtype, "checkpoint": network["load_ckpt"],
            "feature_size": model.frontend.out_channels if level == "frontend"
            else model.visual_head.hidden_size + model.visual_head.num_classes}
    if dist.is_main:
        claim(cache_dir, meta)
    gather_objects(None)  # every rank waits until the cache is claimed (or refused)
    counts = {}
    for split in splits:
        if data.get(split) is None:
            log.info("%s: no data.%s given, skipped", split, split)
            continue
        dataset = SignDataset(sign_dataset_cfg(cfg), split, False, cfg["training"]["random_seed"], glosses)
        _extract_split(model, level == "head", dataset, cache_dir, split, np.dtype(dtype), dist, data["skip_bad_samples"])
        gather_objects(None)  # the index lists what every rank wrote
        if dist.is_main:
            names = [dataset.name(i) for i in range(len(dataset))]
            missing = write_index(cache_dir, split, names)
            counts[split] = len(names) - missing
            log.info("%s: %d samples indexed in %s%s", split, counts[split], cache_dir / split,
                     f", {missing} unreadable left out" if missing else "")
    return counts


@torch.no_grad()
def _extract_split(model: RecognitionNetwork, through_head: bool, dataset: SignDataset, cache_dir: Path, split: str,
                   dtype: np.dtype, dist: DistInfo, skip_bad: bool) -> None:
    mine = range(dist.rank, len(dataset), dist.world_size)
    todo = [i for i in mine if not sample_file(cache_dir, split, dataset.name(i)).is_file()]
    started = time.perf_counter()
    log.info("%s: %d samples to extract on this process (%d already cached)", split, len(todo), len(mine) - len(todo))
    error = None
    for done, index in enumerate(todo, start=1):
        try:
            video = dataset.frames(index)
        except DataError as err:
            if not skip_bad:
                error = err
                break  # every rank must reach the collective below before the error is raised
            log.warning("skipped: %s", err)
            continue
        lengths = torch.tensor([video.shape[1]], device=dist.device)
        features, out_lengths = model.frontend_features(video[None].to(dist.device), lengths)
        if through_head:
            features = model.head_cache_rows(features, out_lengths)
        write_sample(sample_file(cache_dir, split, dataset.name(index)),
                     features[0, : int(out_lengths[0])].cpu().numpy().astype(dtype))
        if done % 100 == 0 or done == len(todo):
            log.info("%s: %d/%d (%.1f samples/s)", split, done, len(todo), done / (time.perf_counter() - started))
    n_errors, = all_reduce_sum([error is not None], dist.device)
    if error is not None:
        raise error
    if n_errors:
        raise DataError(f"{split}: an unreadable sample on another process (see its log); "
                        "set data.skip_bad_samples: true to skip such samples")


if __name__ == "__main__":
    run_main(main)
