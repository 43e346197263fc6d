"""Datasets by task: `build_dataset(cfg, split, train)` maps a validated config to a Dataset."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

import torch

from dataset.vocab import Vocabulary, WordClasses
from utils.errors import UserError

if TYPE_CHECKING:
    from dataset.translation import TranslationVocab


def build_dataset(
    cfg: dict[str, Any], split: str, train: bool = False,
    vocab: Vocabulary | WordClasses | TranslationVocab | None = None,
) -> torch.utils.data.Dataset:
    """The `split` ('train', 'dev' or 'test') of the task's corpus; `train` turns augmentation on.

    `vocab` (the train split's, or a checkpoint's) is shared by tasks whose vocabulary comes from data.
    """
    if cfg["task"] == "lip_sentence":
        from dataset.grid import GridDataset

        return GridDataset(cfg["data"], split, train=train, seed=cfg["training"]["random_seed"])
    if cfg["task"] == "lip_word":
        from dataset.lrw import LrwDataset

        return LrwDataset(cfg["data"], split, train=train, seed=cfg["training"]["random_seed"],
                          in_channels=cfg["model"]["EfLip"]["in_channels"], vocab=vocab)
    if cfg["task"] == "S2G":
        from dataset.sign import SignDataset

        return SignDataset(sign_dataset_cfg(cfg), split, train=train, seed=cfg["training"]["random_seed"], vocab=vocab)
    if cfg["task"] == "G2T":
        from dataset.translation import GlossTextDataset

        return GlossTextDataset(cfg, split, vocab=vocab)
    if cfg["task"] == "S2T":
        from dataset.sign_translation import SignTextDataset

        return SignTextDataset(cfg, split, train=train, vocab=vocab)
    raise ValueError(f"no dataset for task {cfg['task']!r}")


def sign_dataset_cfg(cfg: dict[str, Any]) -> dict[str, Any]:
    """What `SignDataset` reads from a sign-video task's config: `data` plus the recognition network's
    gloss list, temporal augmentation and shortest usable clip."""
    from modelling.recognition import build_frontend, min_input_frames

    data, network = cfg["data"], cfg["model"]["RecognitionNetwork"]
    return {
        **data,
        "gloss2ids": network["GlossTokenizer"]["gloss2id_file"],
        "temporal": data["transform_cfg"]["temporal_augmentation"],
        "min_frames": min_input_frames(build_frontend(network, pretrained=False)),
    }


def _lip_sentence_video(cfg: dict[str, Any], spec: str, crop_mouth: str) -> dict[str, torch.Tensor]:
    from dataset.grid import read_user_video

    return {"video": read_user_video(spec, cfg["data"]["input"], crop_mouth)}


def _lip_word_video(cfg: dict[str, Any], spec: str, crop_mouth: str) -> dict[str, torch.Tensor]:
    from dataset.lrw import read_user_video

    return read_user_video(spec, cfg, crop_mouth)


def _sign_video(cfg: dict[str, Any], spec: str, crop_mouth: str) -> dict[str, torch.Tensor]:
    from dataset.sign import read_eval_clip

    return {"video": read_eval_clip(spec, sign_dataset_cfg(cfg))}


# Tasks whose models read videos: (cfg, video spec, crop_mouth) -> the inputs their dataset's sample gives
# (`video`, and LRW's `boundary` where the model takes one).
VIDEO_READERS: dict[str, Callable[[dict[str, Any], str, str], dict[str, torch.Tensor]]] = {
    "lip_sentence": _lip_sentence_video,
    "lip_word": _lip_word_video,
    "S2G": _sign_video,
    "S2T": _sign_video,
}


def require_video_task(task: str) -> None:
    if task not in VIDEO_READERS:
        raise UserError(f"--video: a {task} model does not read videos; models that do: {', '.join(VIDEO_READERS)}")


def video_sample(cfg: dict[str, Any], spec: str, index: int = 0, crop_mouth: str = "auto") -> dict[str, Any]:
    """A video of the user's (`dataset.video.open_video` spec) as a sample of the task's dataset, without a target.

    `crop_mouth` (lip reading): 'auto' crops the mouth region unless the frames already have the model input's
    aspect ratio (square for word models), 'yes' always, 'no' never.
    """
    require_video_task(cfg["task"])
    return {"index": index, "name": spec, **VIDEO_READERS[cfg["task"]](cfg, spec, crop_mouth), "text": "",
            "labels": torch.zeros(0, dtype=torch.long)}


def vocabulary_from_state(cfg: dict[str, Any], state: dict[str, Any]) -> Vocabulary | WordClasses | TranslationVocab:
    """The vocabulary a checkpoint stored (`vocab.to_state()`): glosses, characters or words, and the text tokenizer
    of the translation tasks."""
    if cfg["task"] == "lip_word":
        return WordClasses.from_state(state)
    if cfg["task"] in ("G2T", "S2T"):
        from dataset.translation import TranslationVocab

        return TranslationVocab.from_state(state, cfg)
    return Vocabulary.from_state(state)
