"""Cached features of a trained Sign2Gloss model, for Sign2Text (`extract_feature.py` writes them).

The level follows `data.input_type`: `feature` caches the frontend's output (T x C), `head_feature` the
VisualHead's outputs (T x (hidden + glosses): gloss features, then gloss logits). A cache folder holds

    meta.json           what made the features: the level, the SHA-256 of the weights that ran, the preprocessing
    <split>/<key>.npy   one T x C array per sample (float16 or float32), each written atomically
    <split>/index.json  sample name -> file and frame count, written once every sample of the split is there

Training opens each sample with `np.load(mmap_mode="r")`, so a process holds the batch it uses in memory,
never a whole split. A cache whose weights or preprocessing differ from what a run would compute is refused.
"""
from __future__ import annotations

import hashlib
import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch

from utils.checkpoint import atomic_write, load_checkpoint, strip_prefix, weights_fingerprint
from utils.errors import CheckpointError, ConfigError, DataError

META_FILE = "meta.json"
INDEX_FILE = "index.json"
MATCHED_KEYS = ("level", "frontend_sha256", "head_sha256", "preprocessing")  # what must agree between a cache and a run
LEVELS = {"feature": "frontend", "head_feature": "head"}  # data.input_type -> what the cache holds


def sample_file(cache_dir: str | os.PathLike, split: str, name: str) -> Path:
    """Where a sample's features lie: its name hashed, so any name makes a valid, flat file name."""
    return Path(cache_dir) / split / f"{hashlib.sha1(name.encode()).hexdigest()[:20]}.npy"


def write_sample(path: Path, features: np.ndarray) -> None:
    atomic_write(path, lambda f: np.save(f, features, allow_pickle=False))


def preprocessing(cfg: dict[str, Any]) -> dict[str, Any]:
    """The settings that change what the frontend sees: frame selection, crop, size and scaling."""
    data = cfg["data"]
    return {
        "input_convention": cfg["model"]["RecognitionNetwork"]["input_convention"],
        "img_size": data["transform_cfg"]["img_size"],
        "eval_crop": data["transform_cfg"]["eval_crop"],
        "max_frames": data["input"]["max_frames"],
        "frame_size": data["input"]["frame_size"],
    }


def provenance(cfg: dict[str, Any], frontend_sha256: str, head_sha256: str) -> dict[str, Any]:
    """What a cache made for `cfg` by these weights records, and what a run on it must match."""
    level = cache_level(cfg)
    return {"level": level, "frontend_sha256": frontend_sha256, "head_sha256": head_sha256 if level == "head" else None,
            "preprocessing": preprocessing(cfg)}


def cache_level(cfg: dict[str, Any]) -> str:
    if cfg["data"]["input_type"] not in LEVELS:
        raise ConfigError(f"data.input_type {cfg['data']['input_type']!r} reads no feature cache; "
                          f"the ones that do: {', '.join(LEVELS)}")
    return LEVELS[cfg["data"]["input_type"]]


@lru_cache(maxsize=4)
def s2g_checkpoint(path: str) -> tuple[dict[str, Any], dict[str, str]]:
    """A trained Sign2Gloss checkpoint's vocabulary state and the SHA-256 of its `frontend` and `visual_head` weights."""
    payload = load_checkpoint(path)
    if not isinstance(payload, dict) or "vocab" not in payload or "model" not in payload:
        raise CheckpointError(f"model.RecognitionNetwork.load_ckpt {path}: expected a Sign2Gloss checkpoint written "
                              "by training.py (with 'model' and 'vocab'), e.g. <model_dir>/ckpts/best.ckpt")
    state = strip_prefix(payload["model"])
    fingerprints = {}
    for part in ("frontend", "visual_head"):
        weights = {k.removeprefix(part + "."): v for k, v in state.items() if k.startswith(part + ".")}
        if not weights:
            raise CheckpointError(f"model.RecognitionNetwork.load_ckpt {path}: holds no {part} weights")
        fingerprints[part] = weights_fingerprint(weights)
    return payload["vocab"], fingerprints


def expected_meta(cfg: dict[str, Any]) -> dict[str, Any]:
    """What a cache for this config must record: made by `model.RecognitionNetwork.load_ckpt`, at its level."""
    _, fingerprints = s2g_checkpoint(cfg["model"]["RecognitionNetwork"]["load_ckpt"])
    return provenance(cfg, fingerprints["frontend"], fingerprints["visual_head"])


def claim(cache_dir: Path, meta: dict[str, Any]) -> None:
    """Write `meta.json` for a new cache, or check that an existing cache was made the same way."""
    path = cache_dir / META_FILE
    if path.is_file():
        _check_meta(cache_dir, _read_json(path), meta, "this extraction")
        return
    text = json.dumps(meta, indent=2) + "\n"
    atomic_write(path, lambda f: f.write(text.encode()))


def write_index(cache_dir: Path, split: str, names: list[str]) -> int:
    """Index the split's samples that have a features file; returns how many are missing."""
    entries, missing = {}, 0
    for name in names:
        file = sample_file(cache_dir, split, name)
        if file.is_file():
            entries[name] = {"file": file.name, "frames": int(np.load(file, mmap_mode="r").shape[0])}
        else:
            missing += 1
    text = json.dumps(entries, indent=1, ensure_ascii=False) + "\n"
    atomic_write(cache_dir / split / INDEX_FILE, lambda f: f.write(text.encode()))
    return missing


class FeatureCache:
    """One split of a cache, checked against the meta a run expects; `read(name)` gives T x C float32."""

    def __init__(self, cache_dir: str | os.PathLike, split: str, expected: dict[str, Any]) -> None:
        self.dir = Path(cache_dir)
        meta_path, index_path = self.dir / META_FILE, self.dir / split / INDEX_FILE
        if not meta_path.is_file() or not index_path.is_file():
            raise DataError(f"data.feature_cache {self.dir}: no {split} features ({index_path} is missing); "
                            "run `python extract_feature.py --config <this config>` first")
        _check_meta(self.dir, _read_json(meta_path), expected, "this run")
        self.split = split
        self.index: dict[str, dict[str, Any]] = _read_json(index_path)

    def frames(self, name: str) -> int | None:
        entry = self.index.get(name)
        return entry["frames"] if entry else None

    def read(self, name: str) -> torch.Tensor:
        entry = self.index.get(name)
        if entry is None:
            raise DataError(f"sample {name}: not in the feature cache {self.dir / self.split} (its video was "
                            "unreadable at extraction, or the annotations changed since)")
        path = self.dir / self.split / entry["file"]
        try:
            features = np.load(path, mmap_mode="r")
        except (OSError, ValueError) as err:
            raise DataError(f"sample {name}: feature file {path} cannot be read: {err}") from None
        return torch.from_numpy(np.array(features, dtype=np.float32))  # a copy: the memory map stays read-only


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise DataError(f"{path}: cannot be read as JSON: {err}") from None


def _check_meta(cache_dir: Path, found: dict[str, Any], expected: dict[str, Any], who: str) -> None:
    for key in MATCHED_KEYS:
        if found.get(key) != expected[key]:
            raise DataError(
                f"data.feature_cache {cache_dir} was made with {key} {found.get(key)}, but {who} has {expected[key]}: "
                "the features came from other weights, preprocessing or level (data.input_type). Extract again into "
                "a new folder (or delete this one)"
            )
