"""Models by task: `build_model(cfg, vocab)` maps a validated config to a module.

Every model's `forward(batch)` returns a dict with `loss`; `decode(outputs, batch)` turns the outputs
into token ids per sample for scoring (a word classifier's: its word ids, best first).
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterator

from torch import nn

from dataset.vocab import Vocabulary, WordClasses, grid_characters
from utils.checkpoint import load_weights
from utils.errors import ConfigError


def build_model(cfg: dict[str, Any], vocab: Vocabulary | WordClasses | None = None) -> nn.Module:
    task = cfg["task"]
    if task == "lip_sentence":
        from modelling.lipnet import LipNet

        vocab = vocab or grid_characters()
        part = cfg["model"]["LipNet"]
        inp = cfg["data"]["input"]
        with _as_config_error("model.LipNet / data.input"):
            model = LipNet(
                num_classes=len(vocab),
                input_size=(inp["height"], inp["width"]),
                channels=tuple(part["channels"]),
                hidden_size=part["hidden_size"],
                dropout=part["dropout"],
                batch_norm=part["batch_norm"],
            )
        if part["load_ckpt"]:
            load_weights(model, part["load_ckpt"], "model.LipNet.load_ckpt")
        model.beam_size = cfg["testing"]["cfg"]["recognition"]["beam_size"]
        return model
    if task == "lip_word":
        from modelling.eflip import EfLip

        if vocab is None:
            raise ValueError("an EfLip model needs the word classes (the train split's, or a checkpoint's)")
        part, data = cfg["model"]["EfLip"], cfg["data"]
        with _as_config_error("model.EfLip"):
            model = EfLip(part, len(vocab), (data["input"]["mean"], data["input"]["std"]),
                          mixup_alpha=data["augmentation"]["mixup"], word_boundary=data["word_boundary"])
        if part["load_ckpt"]:
            load_weights(model, part["load_ckpt"], "model.EfLip.load_ckpt")
        return model
    if task == "S2G":
        from modelling.recognition import RecognitionNetwork

        if vocab is None:
            raise ValueError("an S2G model needs the gloss vocabulary (the train split's, or a checkpoint's)")
        part = cfg["model"]["RecognitionNetwork"]
        with _as_config_error("model.RecognitionNetwork"):
            model = RecognitionNetwork({**part, "augmentation": spatial_augmentation(cfg)}, len(vocab))
        model.beam_size = cfg["testing"]["cfg"]["recognition"]["beam_size"]
        return model
    if task == "G2T":
        from modelling.translation import TranslationNetwork

        if vocab is None:
            raise ValueError("a G2T model needs the gloss vocabulary and text tokenizer (the train split's, or a checkpoint's)")
        return TranslationNetwork(cfg["model"]["TranslationNetwork"], vocab, cfg["testing"]["cfg"]["translation"])
    if task == "S2T":
        from modelling.sign_translation import SignTranslationNetwork

        if vocab is None:
            raise ValueError("an S2T model needs the gloss vocabulary and text tokenizer (the train split's, or a checkpoint's)")
        recognition = {**cfg["model"]["RecognitionNetwork"], "augmentation": spatial_augmentation(cfg)}
        with _as_config_error("model.RecognitionNetwork"):
            model = SignTranslationNetwork(cfg["model"], recognition, vocab, cfg["testing"]["cfg"]["translation"],
                                           cfg["data"]["input_type"])
        model.recognition.beam_size = cfg["testing"]["cfg"]["recognition"]["beam_size"]
        return model
    raise ValueError(f"no model for task {task!r}")


def spatial_augmentation(cfg: dict[str, Any]) -> dict[str, Any]:
    """`data.transform_cfg` less its temporal part: what the model applies to a batch on its device."""
    return {k: v for k, v in cfg["data"]["transform_cfg"].items() if k != "temporal_augmentation"}


@contextlib.contextmanager
def _as_config_error(section: str) -> Iterator[None]:
    """A network's own argument checks (ValueError) reported as the config section they came from."""
    try:
        yield
    except ValueError as err:
        raise ConfigError(f"{section}: {err}") from None
