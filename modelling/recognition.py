"""RecognitionNetwork of SingleStream-SLT (Sign2Gloss): frontend + VisualHead + CTC over glosses.

The model takes the loader's padded uint8 batch as it is: it augments it on the batch's device
(`augment_batch`, train or evaluation by `self.training`), scales it for the frontend
(`to_model_input`), and returns SLRT's output names. CTC uses blank 0, zero_infinity, and sums over
a sample's frames then averages over samples (SLRT: `CTCLoss(reduction="sum") / batch size`).

Padding: the VisualHead masks by length, and the EfficientNet frontend (without `stem_3d`) works
frame by frame, so in evaluation a sample's outputs do not depend on the batch. The S3D frontend's
temporal convolutions and pools also read the padded frames, so its last few output steps of a
shorter clip differ slightly from those of the clip run alone (SLRT behaves the same).
"""
from __future__ import annotations

import os
from itertools import count
from typing import Any

import torch
from torch import nn

from dataset.transforms import CONVENTIONS, augment_batch, augmentation_config, to_model_input
from modelling.efficientnet import EfficientNetV2Frontend
from modelling.s3d import S3DFrontend
from modelling.visual_head import VisualHead, gloss_outputs
from utils.checkpoint import load_checkpoint, load_state_strict, load_weights, strip_prefix
from utils.ctc import ctc_loss, decode, infeasible_targets
from utils.errors import ConfigError


class RecognitionNetwork(nn.Module):
    def __init__(self, cfg: dict[str, Any], num_glosses: int) -> None:
        super().__init__()
        if cfg["input_convention"] not in CONVENTIONS:
            raise ConfigError(f"model.RecognitionNetwork.input_convention must be one of {CONVENTIONS}, "
                              f"got {cfg['input_convention']!r}")
        self.input_convention = cfg["input_convention"]
        self.augmentation = augmentation_config(cfg["augmentation"])
        # A whole-network checkpoint (load_ckpt, below) replaces every frontend weight: no pretrained load first.
        self.frontend = build_frontend(cfg, pretrained=not cfg["load_ckpt"])
        head = cfg["visual_head"]
        self.visual_head = VisualHead(
            num_glosses, self.frontend.out_channels, hidden_size=head["hidden_size"], ff_size=head["ff_size"],
            ff_kernel_sizes=tuple(head["ff_kernelsize"]), dropout=head["dropout"], positional_encoding=head["pe"],
        )
        self.beam_size = 1  # set from testing.cfg.recognition.beam_size by the caller
        self.min_frames = min_input_frames(self.frontend)
        if cfg["load_ckpt"]:
            load_weights(self, cfg["load_ckpt"], "model.RecognitionNetwork.load_ckpt")

    def forward(self, batch: dict[str, Any]) -> dict[str, Any]:
        """From `video` (uint8, with `video_lengths`), or from cached `features` (with `feature_lengths`)."""
        if "features" in batch:
            features, lengths = batch["features"], batch["feature_lengths"]
        else:
            features, lengths = self.frontend_features(batch["video"], batch["video_lengths"], batch.get("generator"))
        return self.head_outputs(features, lengths, batch["labels"], batch["label_lengths"])

    def frontend_features(self, video: torch.Tensor, lengths: torch.Tensor,
                          generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """B x T' x C frontend features and their lengths from a padded uint8 batch (augmented in training)."""
        video, colours = augment_batch(video, lengths, self.augmentation, self.training, generator)
        return self.frontend(to_model_input(video, self.input_convention, colours), lengths)

    def head_outputs(self, features: torch.Tensor, lengths: torch.Tensor, labels: torch.Tensor,
                     label_lengths: torch.Tensor) -> dict[str, Any]:
        return self._outputs(self.visual_head(features, lengths), lengths, labels, label_lengths)

    def cached_head_outputs(self, cached: torch.Tensor, lengths: torch.Tensor, labels: torch.Tensor,
                            label_lengths: torch.Tensor) -> dict[str, Any]:
        """The outputs of `head_outputs` from cached rows of `head_cache_rows` (the head is not run)."""
        gloss_feature, logits = cached.split([self.visual_head.hidden_size, self.visual_head.num_classes], dim=-1)
        return self._outputs(gloss_outputs(gloss_feature, logits), lengths, labels, label_lengths)

    def head_cache_rows(self, features: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """B x T' x (hidden + glosses): the head's gloss features, then its gloss logits, what a head-level
        feature cache stores per frame."""
        head = self.visual_head(features, lengths)
        return torch.cat([head["gloss_feature"], head["gloss_logits"]], dim=-1)

    @staticmethod
    def _outputs(head: dict[str, torch.Tensor], lengths: torch.Tensor, labels: torch.Tensor,
                 label_lengths: torch.Tensor) -> dict[str, Any]:
        log_probs = head["gloss_log_probabilities"]
        targets = (lengths, labels, label_lengths)
        return {
            "loss": ctc_loss(log_probs, *targets),
            "num_infeasible": infeasible_targets(*targets),
            "gloss_logits": head["gloss_logits"],
            "gloss_probabilities": head["gloss_probabilities"],
            "gloss_log_probabilities": log_probs,
            "gloss_features": head["gloss_feature"],
            "output_lengths": lengths,
        }

    def decode(self, outputs: dict[str, torch.Tensor], batch: dict[str, Any]) -> list[list[int]]:
        """Gloss ids per sample, blanks removed: greedy for `beam_size` 1, prefix beam search above."""
        return decode(outputs["gloss_log_probabilities"], outputs["output_lengths"], self.beam_size)


def min_input_frames(frontend: S3DFrontend | EfficientNetV2Frontend) -> int:
    """The shortest clip that gives the frontend at least one output step (datasets refuse shorter ones)."""
    return next(n for n in count(1) if int(frontend.output_lengths(torch.tensor([n]))) > 0)


def build_frontend(cfg: dict[str, Any], pretrained: bool = True) -> S3DFrontend | EfficientNetV2Frontend:
    """The frontend `model.RecognitionNetwork` names, with its pretrained weights when given and asked for."""
    if cfg["frontend"] == "s3d":
        part = cfg["s3d"]
        return S3DFrontend(part["use_block"], part["freeze_block"], part["pretrained_ckpt"] if pretrained else None,
                           part["bn_momentum"])
    if cfg["frontend"] == "efficientnet":
        part = cfg["efficientnet"]
        frontend = EfficientNetV2Frontend(part["scale"], stem_3d=part["stem_3d"])
        if part["pretrained_ckpt"] and pretrained:
            _load_efficientnet(frontend, part["pretrained_ckpt"])
        return frontend
    raise ConfigError(f"model.RecognitionNetwork.frontend must be 's3d' or 'efficientnet', got {cfg['frontend']!r}")


def _load_efficientnet(frontend: EfficientNetV2Frontend, path: str | os.PathLike) -> None:
    """Strictly load a frontend state dict or a torchvision EfficientNetV2 one (its classifier ignored)."""
    state = strip_prefix(load_checkpoint(path), "module.")
    state = {k: v for k, v in state.items() if not k.startswith("classifier.")}
    load_state_strict(frontend, state, f"model.RecognitionNetwork.efficientnet.pretrained_ckpt: {path}")
