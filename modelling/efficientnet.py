"""EfficientNetV2 frontend for lip reading (EfLip): a 2D network applied to every frame.

Scales T, S and B are built from torchvision's EfficientNet blocks. Widths and depths below are the
published settings already scaled (torchvision's configs take unscaled FusedMBConv channels):
  S: torchvision `efficientnet_v2_s` (`_efficientnet_conf("efficientnet_v2_s")`).
  T: timm `efficientnetv2_rw_t` = timm `_gen_efficientnetv2_s(channel_multiplier=0.8,
     depth_multiplier=0.9, rw=False)`: widths round_channels(c * 0.8) to multiples of 8, depths
     ceil(r * 0.9), head round_channels(1280 * 0.8) = 1024.
  B: timm `tf_efficientnetv2_b0` = timm `_gen_efficientnetv2_base` at multipliers 1.0 (the B0 of
     google/automl efficientnetv2), head 1280.
SE ratio 0.25 of the block input and SiLU everywhere, as in both torchvision and timm.
EfLip (modelling/eflip.py) takes the stages alone (`efficientnet_stages`) behind its own 3D stem.
"""
from __future__ import annotations

from functools import partial

import torch
from torch import nn
from torchvision.models.efficientnet import EfficientNet, FusedMBConvConfig, MBConvConfig

# (expand_ratio, kernel, stride, input_channels, out_channels, num_layers) per stage, and head width
SCALES: dict[str, tuple[list[FusedMBConvConfig | MBConvConfig], int]] = {
    "T": ([
        FusedMBConvConfig(1, 3, 1, 24, 24, 2),
        FusedMBConvConfig(4, 3, 2, 24, 40, 4),
        FusedMBConvConfig(4, 3, 2, 40, 48, 4),
        MBConvConfig(4, 3, 2, 48, 104, 6),
        MBConvConfig(6, 3, 1, 104, 128, 9),
        MBConvConfig(6, 3, 2, 128, 208, 14),
    ], 1024),
    "S": ([
        FusedMBConvConfig(1, 3, 1, 24, 24, 2),
        FusedMBConvConfig(4, 3, 2, 24, 48, 4),
        FusedMBConvConfig(4, 3, 2, 48, 64, 4),
        MBConvConfig(4, 3, 2, 64, 128, 6),
        MBConvConfig(6, 3, 1, 128, 160, 9),
        MBConvConfig(6, 3, 2, 160, 256, 15),
    ], 1280),
    "B": ([
        FusedMBConvConfig(1, 3, 1, 32, 16, 1),
        FusedMBConvConfig(4, 3, 2, 16, 32, 2),
        FusedMBConvConfig(4, 3, 2, 32, 48, 2),
        MBConvConfig(4, 3, 2, 48, 96, 3),
        MBConvConfig(6, 3, 1, 96, 112, 5),
        MBConvConfig(6, 3, 2, 112, 192, 8),
    ], 1280),
}


class EfficientNetV2Frontend(nn.Module):
    """B x C x T x H x W -> B x T x out_channels: optional 3D stem, then EfficientNetV2 per frame."""

    def __init__(
        self,
        scale: str,
        in_channels: int = 3,
        stem_3d: bool = False,
        stem_channels: int | None = None,
        stochastic_depth_prob: float = 0.2,
    ):
        super().__init__()
        if stem_channels is not None and not stem_3d:
            raise ValueError("stem_channels sets the width of the 3D stem; it needs stem_3d=True")
        network = _network(scale, stochastic_depth_prob)
        head_channels = SCALES[scale][1]
        self.features = network.features
        first_conv = self.features[0][0]
        frame_channels = in_channels
        self.stem_3d = None
        if stem_3d:
            frame_channels = stem_channels or first_conv.out_channels
            self.stem_3d = stem_3d_block(in_channels, frame_channels)
        if frame_channels != first_conv.in_channels:
            self.features[0][0] = nn.Conv2d(frame_channels, first_conv.out_channels, 3, 2, 1, bias=False)
            nn.init.kaiming_normal_(self.features[0][0].weight, mode="fan_out")  # torchvision's init
        self.out_channels = head_channels

    def forward(self, video: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.stem_3d is not None:
            video = self.stem_3d(video)
        batch, _, time = video.shape[:3]
        frames = video.transpose(1, 2).flatten(0, 1)
        features = self.features(frames).mean(dim=(2, 3))
        return features.view(batch, time, -1), self.output_lengths(lengths)

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        return lengths


def stem_3d_block(in_channels: int, out_channels: int) -> nn.Sequential:
    """Conv3d k(3,5,5) s(1,2,2) p(1,2,2), BatchNorm, SiLU: halves height and width, keeps every frame."""
    return nn.Sequential(
        nn.Conv3d(in_channels, out_channels, (3, 5, 5), (1, 2, 2), (1, 2, 2), bias=False),
        nn.BatchNorm3d(out_channels),
        nn.SiLU(inplace=True),
    )


def efficientnet_stages(scale: str, num_stages: int | None = None,
                        stochastic_depth_prob: float = 0.2) -> tuple[nn.Sequential, int, int]:
    """The first `num_stages` MBConv/FusedMBConv stages of a scale (all when None), without the 2D stem
    and the head; returns them with their input and output channels."""
    features = _network(scale, stochastic_depth_prob).features
    setting = SCALES[scale][0]
    num_stages = len(setting) if num_stages is None else num_stages
    if not 1 <= num_stages <= len(setting):
        raise ValueError(f"EfficientNetV2-{scale} has {len(setting)} stages, {num_stages} asked for")
    stages = features[1 : 1 + num_stages]
    return stages, setting[0].input_channels, setting[num_stages - 1].out_channels


def _network(scale: str, stochastic_depth_prob: float) -> EfficientNet:
    if scale not in SCALES:
        raise ValueError(f"EfficientNetV2 scale must be one of {sorted(SCALES)}, got {scale!r}")
    setting, head_channels = SCALES[scale]
    return EfficientNet(
        setting, dropout=0.0, stochastic_depth_prob=stochastic_depth_prob,
        norm_layer=partial(nn.BatchNorm2d, eps=1e-3), last_channel=head_channels,
    )
