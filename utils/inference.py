"""A trained model ready to use, from a checkpoint (or an exported folder) alone or with a config file,
and transcription of the user's own videos."""
from __future__ import annotations

import copy
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch

from dataset import require_video_task, video_sample, vocabulary_from_state
from dataset.loader import collate
from dataset.video import IMAGE_SUFFIXES, natural_key
from dataset.vocab import WordClasses
from modelling import build_model
from utils.checkpoint import evaluation_weights, load_checkpoint, load_state_strict
from utils.config import resolve_config
from utils.errors import CheckpointError, UserError
from utils.evaluation import autocast, move_to
from utils.export import read_export

log = logging.getLogger(__name__)
VIDEO_SUFFIXES = (".mp4", ".mpg", ".mpeg", ".avi", ".mov", ".mkv", ".webm")
# Files that initialise a model before training: the checkpoint's weights replace them, so inference skips them.
INIT_WEIGHT_KEYS = ("load_ckpt", "pretrained_ckpt", "gloss2embed_file")


@dataclass
class Trained:
    cfg: dict[str, Any]
    model: torch.nn.Module
    vocab: Any  # Vocabulary, or G2T's TranslationVocab
    source: Path
    weights: str  # 'ema' or 'model'
    step: int | None


def read_trained(path: str | os.PathLike, need_config: bool = False) -> dict[str, Any]:
    """The payload of a training checkpoint, or of a folder written by `utils.export`, checked for what inference needs."""
    path = Path(path)
    payload = read_export(path) if path.is_dir() else load_checkpoint(path)
    needed = ("model", "vocab", "config") if need_config else ("model", "vocab")
    absent = [key for key in needed if key not in payload]
    if absent:
        raise CheckpointError(f"checkpoint {path} holds no {' or '.join(map(repr, absent))}: "
                              f"expected a checkpoint written by training.py (with {', '.join(map(repr, needed))})")
    return payload


def checkpoint_config(payload: dict[str, Any], path: str | os.PathLike, opts: Sequence[str] = ()) -> dict[str, Any]:
    """The config a checkpoint stored, with `opts` applied. Input files are not required to exist here: a
    checkpoint moved to another machine still transcribes videos; evaluating a split needs its files."""
    return resolve_config(copy.deepcopy(payload["config"]), f"config stored in {path}", opts, check_paths=False)


def load_trained(path: str | os.PathLike, cfg: dict[str, Any] | None = None, opts: Sequence[str] = (),
                 device: torch.device = torch.device("cpu")) -> Trained:
    """The model of a checkpoint in evaluation mode, with the EMA weights when the run kept them. The config is
    `cfg` when given (a config file's), else the one the checkpoint stored, with `opts` applied."""
    payload = read_trained(path, need_config=cfg is None)
    if cfg is None:
        cfg = checkpoint_config(payload, path, opts)
    vocab = vocabulary_from_state(cfg, payload["vocab"])
    model = build_model(without_init_weights(cfg), vocab)  # the data may still need them (a feature cache's S2G)
    weights, which = evaluation_weights(payload)
    load_state_strict(model, weights, f"checkpoint {path} ({which} weights)")
    model.to(device).eval()
    return Trained(cfg, model, vocab, Path(path), which, payload.get("state", {}).get("step"))


def without_init_weights(cfg: dict[str, Any]) -> dict[str, Any]:
    """`cfg` with the model's initialisation files (INIT_WEIGHT_KEYS) unset, wherever they are in `model`."""
    def clear(section: dict[str, Any]) -> dict[str, Any]:
        return {k: None if k in INIT_WEIGHT_KEYS else clear(v) if isinstance(v, dict) else v for k, v in section.items()}

    return {**cfg, "model": clear(cfg["model"])}


def video_inputs(path: str | os.PathLike) -> list[str]:
    """What `--video PATH` names: a video file, a zip spec, a folder with videos (each one input, subfolders
    included, in natural order), or a folder of frames (one input)."""
    path = str(path)
    if ".zip@" in path.lower() or os.path.isfile(path):
        return [path]
    if not os.path.isdir(path):
        raise UserError(f"--video {path} does not exist")
    videos = [str(p) for p in Path(path).rglob("*") if p.name.lower().endswith(VIDEO_SUFFIXES) and p.is_file()]
    if videos:
        return sorted(videos, key=natural_key)
    if any(n.lower().endswith(IMAGE_SUFFIXES) for n in os.listdir(path)):
        return [path]
    raise UserError(f"--video {path}: the folder holds no video files ({', '.join(VIDEO_SUFFIXES)}) "
                    f"and no frames ({', '.join(IMAGE_SUFFIXES)})")


def transcribe(trained: Trained, path: str | os.PathLike, crop_mouth: str = "auto") -> Iterator[tuple[str, str]]:
    """(video, the model's output text) for each video `path` names (see `video_inputs`), as each is read, one
    video at a time (so no padding changes a result). A word model's text is `ranked_words`."""
    require_video_task(trained.cfg["task"])
    device = next(trained.model.parameters()).device
    for index, spec in enumerate(video_inputs(path)):
        batch = move_to(collate([video_sample(trained.cfg, spec, index, crop_mouth)]), device)
        with torch.no_grad(), autocast(device, trained.cfg["training"]["amp"]):
            outputs = trained.model(batch)
        decoded = trained.model.decode(outputs, batch)
        if trained.cfg["task"] == "lip_word":
            yield spec, ranked_words(trained.vocab, outputs["logits"][0], decoded[0])
        else:
            yield spec, reading(trained.vocab, decoded)


def reading(vocab: Any, decoded: list[list[int]] | dict[str, list[list[int]]]) -> str:
    """The text of the first sample a model's `decode` gave: for Sign2Text the translation, then its glosses."""
    if isinstance(decoded, dict):
        return f"{vocab.decode(decoded['text'][0])}\t(glosses: {vocab.glosses.decode(decoded['gloss'][0])})"
    return vocab.decode(decoded[0])


def ranked_words(vocab: WordClasses, logits: torch.Tensor, ids: Sequence[int]) -> str:
    """A word model's reading: the best word, then the words `ids` ranks with their probabilities."""
    probabilities = logits.float().softmax(-1).tolist()
    ranked = ", ".join(f"{vocab.words[i]} {probabilities[i]:.3f}" for i in ids)
    return f"{vocab.words[ids[0]]}\t(top {len(ids)}: {ranked})"
