"""S3D visual frontend (SLRT's SingleStream-SLT), built from torchvision's S3D blocks.

`use_block` keeps the first N of torchvision's `s3d().features`; SLRT uses 13 (up to Mixed_4f:
832 channels, temporal stride 4). Weights load from a local file in either of two layouts: the
Kinetics-400 S3D of kylemin/S3D used by SLRT (`base.N.*`, often `module.`-prefixed; it expects BGR
in [-1, 1]) or torchvision's own (`features.*`; RGB with Kinetics mean/std).
"""
from __future__ import annotations

import logging
import os
import re

import torch
from torch import nn
from torchvision.models.video import s3d
from torchvision.models.video.s3d import SepInceptionBlock3D

from utils.checkpoint import load_checkpoint, strip_prefix
from utils.errors import CheckpointError

log = logging.getLogger(__name__)

# kylemin/S3D -> torchvision S3D, applied in order. torchvision's SepInceptionBlock3D.branch0 is the
# conv unit itself, where kylemin wraps it in a one-element Sequential.
KYLEMIN_TO_TORCHVISION = [
    (re.compile(r"^base\.(\d+)\."), r"features.\1."),
    (re.compile(r"^fc\.0\."), "classifier.1."),
    (re.compile(r"\.branch0\.0\.conv\."), ".branch0.0."),
    (re.compile(r"\.branch0\.0\.bn\."), ".branch0.1."),
    (re.compile(r"\.conv_s\."), ".0.0."),
    (re.compile(r"\.bn_s\."), ".0.1."),
    (re.compile(r"\.conv_t\."), ".1.0."),
    (re.compile(r"\.bn_t\."), ".1.1."),
    (re.compile(r"\.conv\."), ".0."),
    (re.compile(r"\.bn\."), ".1."),
]


def convert_kylemin_s3d(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a kylemin/S3D state dict (`base.N.*`, `fc.0.*`) to torchvision's `s3d()` keys."""
    state_dict = strip_prefix(state_dict, "module.")
    target_keys = set(s3d(weights=None).state_dict())
    converted, unmapped = {}, []
    for key, tensor in state_dict.items():
        new_key = key
        for pattern, replacement in KYLEMIN_TO_TORCHVISION:
            new_key = pattern.sub(replacement, new_key)
        if new_key in target_keys:
            converted[new_key] = tensor
        else:
            unmapped.append(key)
    if unmapped:
        raise CheckpointError(f"S3D: keys with no place in torchvision's S3D: {_listing(unmapped)}")
    return converted


class S3DFrontend(nn.Module):
    """B x 3 x T x H x W (normalised) -> B x T' x C features, averaged over H and W."""

    def __init__(
        self, use_block: int = 13, freeze_block: int = 0, pretrained: str | os.PathLike | None = None,
        bn_momentum: float | None = None,
    ) -> None:
        """`bn_momentum` None keeps torchvision's 0.001 (the Kinetics weights' statistics barely move);
        training from scratch needs a larger one, e.g. 0.1, or evaluation sees the initial statistics."""
        super().__init__()
        features = s3d(weights=None).features
        if bn_momentum is not None:
            for module in features.modules():
                if isinstance(module, nn.BatchNorm3d):
                    module.momentum = bn_momentum
        if not 1 <= use_block <= len(features):
            raise ValueError(f"use_block must be in 1..{len(features)}, got {use_block}")
        if not 0 <= freeze_block <= use_block:
            raise ValueError(f"freeze_block must be in 0..{use_block}, got {freeze_block}")
        self.blocks = features[:use_block]
        self.freeze_block = freeze_block
        self.out_channels = self._count_out_channels()
        if pretrained is not None:
            self.load_pretrained(pretrained)
        for param in self.blocks[:freeze_block].parameters():
            param.requires_grad = False
        self.train()

    def _count_out_channels(self) -> int:
        with torch.no_grad():
            # 16 frames at 32 x 32 survive every pooling layer of S3D
            return self.blocks.eval()(torch.zeros(1, 3, 16, 32, 32)).shape[1]

    def train(self, mode: bool = True) -> S3DFrontend:
        super().train(mode)
        self.blocks[: self.freeze_block].eval()  # frozen blocks keep their BatchNorm statistics
        return self

    def forward(self, video: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.blocks(video).mean(dim=(3, 4)).transpose(1, 2)
        return features, self.output_lengths(lengths)

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        return _temporal_output_length(self.blocks, lengths)

    def load_pretrained(self, path: str | os.PathLike) -> int:
        """Load the blocks in use strictly from a kylemin/S3D or torchvision S3D file; returns the count."""
        in_use, unexpected = _blocks_in_use(_torchvision_layout(path), len(self.blocks))
        wanted = self.blocks.state_dict()
        # checkpoints saved before PyTorch 0.4.1 lack this counter; BatchNorm fills it in itself
        missing = [
            f"features.{k}" for k in wanted if k not in in_use and not k.endswith("num_batches_tracked")
        ]
        unexpected += [f"features.{k}" for k in in_use if k not in wanted]
        mismatched = [
            f"features.{k} {tuple(in_use[k].shape)} vs {tuple(wanted[k].shape)}"
            for k in in_use.keys() & wanted.keys() if in_use[k].shape != wanted[k].shape
        ]
        if missing or unexpected or mismatched:
            raise CheckpointError(
                f"S3D: {path} does not match features[:{len(self.blocks)}]: missing {_listing(missing)}, "
                f"unexpected {_listing(unexpected)}, shape mismatch {_listing(mismatched)}"
            )
        self.blocks.load_state_dict(in_use, strict=False)  # strictness checked above
        log.info("S3D: loaded %d tensors from %s", len(in_use), path)
        return len(in_use)


def _torchvision_layout(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    state_dict = strip_prefix(load_checkpoint(path), "module.")
    if any(key.startswith("base.") for key in state_dict):
        return convert_kylemin_s3d(state_dict)
    if any(key.startswith("features.") for key in state_dict):
        return state_dict
    raise CheckpointError(f"S3D: {path} has no kylemin/S3D `base.*` or torchvision `features.*` keys")


def _blocks_in_use(state_dict: dict[str, torch.Tensor], use_block: int) -> tuple[dict, list[str]]:
    """`features.i.*` tensors with i < use_block, renamed to `i.*`; and keys that are not S3D's."""
    in_use, unexpected = {}, []
    for key, tensor in state_dict.items():
        match = re.match(r"features\.(\d+)\.", key)
        if match is None:
            if not key.startswith("classifier."):
                unexpected.append(key)
        elif int(match.group(1)) < use_block:
            in_use[key.removeprefix("features.")] = tensor
    return in_use, unexpected


def _temporal_output_length(module: nn.Module, lengths: torch.Tensor) -> torch.Tensor:
    if isinstance(module, SepInceptionBlock3D):
        return _temporal_output_length(module.branch1, lengths)  # branches are concatenated, so all agree
    if isinstance(module, (nn.Conv3d, nn.MaxPool3d)):
        kernel, stride, padding, dilation = (
            _first(getattr(module, name)) for name in ("kernel_size", "stride", "padding", "dilation")
        )
        span = dilation * (kernel - 1) + 1
        return torch.div(lengths + 2 * padding - span, stride, rounding_mode="floor") + 1
    for child in module.children():
        lengths = _temporal_output_length(child, lengths)
    return lengths


def _first(value: int | tuple[int, ...]) -> int:
    return value[0] if isinstance(value, tuple) else value


def _listing(keys: list[str], limit: int = 10) -> str:
    keys = sorted(keys)
    return f"{keys[:limit]}{' ...' if len(keys) > limit else ''}" if keys else "none"
