"""EfLip: word-level lip reading (LRW) with a 3D stem, EfficientNetV2 per frame, a Transformer and a TCN.

B x C x T x H x W uint8 mouth crops -> 3D stem (C -> C0, halves height and width) -> the scale's
EfficientNetV2 stages on every frame -> 1x1 conv to 2 x hidden, spatial mean, GLU -> positional encoding,
Transformer encoder over time (batch-first, padding mask) -> dilated TCN -> temporal mean over the
clip's own frames -> classifier. Scales, with the EfficientNetV2 stages they keep (modelling/efficientnet.py):
  T: the first four stages of EfficientNetV2-S (it stops at 128 channels, stride 16)
  S: EfficientNetV2-S, all six stages;  B: EfficientNetV2-B0, all six stages
With the default widths (hidden 384, Transformer feed-forward 128, TCN 4 x 463) and 500 words these are
the reference's 8.2 M, 26.2 M and 11.9 M parameters.

Padded frames are zeroed before every temporal convolution, never enter the per-frame network and are
masked in attention and pooling, so in eval mode each sample's output depends only on that sample.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from modelling.efficientnet import efficientnet_stages, stem_3d_block
from modelling.visual_head import SinusoidalPositions

# EfLip scale -> (EfficientNetV2 scale, stages kept; None keeps all)
EFLIP_SCALES: dict[str, tuple[str, int | None]] = {"T": ("S", 4), "S": ("S", None), "B": ("B", None)}
TOP_K = 5  # decode ranks this many words: top-1 and top-5 accuracy


class EfLip(nn.Module):
    """`cfg`: the `model.EfLip` section; `normalisation`: (mean, std) of pixel values in [0, 1]."""

    def __init__(self, cfg: dict[str, Any], num_classes: int, normalisation: tuple[float, float] = (0.421, 0.165),
                 mixup_alpha: float = 0.0, word_boundary: bool = False) -> None:
        super().__init__()
        if cfg["efficientnet_size"] not in EFLIP_SCALES:
            raise ValueError(f"efficientnet_size must be one of {sorted(EFLIP_SCALES)}, "
                             f"got {cfg['efficientnet_size']!r}")
        scale, num_stages = EFLIP_SCALES[cfg["efficientnet_size"]]
        hidden, tcn = cfg["hidden_size"], cfg["tcn"]
        self.mean, self.std = normalisation
        self.mixup_alpha = mixup_alpha
        self.label_smoothing = cfg["label_smoothing"]
        self.stages, stem_channels, stage_channels = efficientnet_stages(scale, num_stages, cfg["stochastic_depth"])
        self.stem = stem_3d_block(cfg["in_channels"], stem_channels)
        self.head = nn.Conv2d(stage_channels, 2 * hidden, 1, bias=False)  # its output is halved by a GLU
        # A clip's word-boundary indicator (0/1 per frame, mixed by mixup) scales this learned vector.
        self.boundary = nn.Parameter(torch.zeros(hidden)) if word_boundary else None
        self.positions = SinusoidalPositions(hidden)
        layer = nn.TransformerEncoderLayer(hidden, cfg["transformer"]["heads"], cfg["transformer"]["ff_size"],
                                           cfg["dropout"], batch_first=True)
        self.transformer = nn.TransformerEncoder(layer, cfg["transformer"]["layers"], enable_nested_tensor=False)
        widths = [hidden] + [tcn["hidden_size"]] * tcn["layers"]
        self.tcn = nn.ModuleList(TemporalBlock(i, o, tcn["kernel_size"], 2 ** n, cfg["dropout"])
                                 for n, (i, o) in enumerate(zip(widths, widths[1:])))
        self.dropout = nn.Dropout(cfg["dropout"])
        self.classifier = nn.Linear(widths[-1], num_classes)
        for module in self.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.momentum = cfg["bn_momentum"]
        # The per-frame 2D network runs channels-last: an EfLip-T training step 1.16x as fast on one or two CPU
        # threads (benchmarks/train_step.py, variant channels-first), and the layout GPU convolutions prefer
        # under autocast.
        self.stages.to(memory_format=torch.channels_last)
        self.head.to(memory_format=torch.channels_last)

    def logits(self, video: torch.Tensor, lengths: torch.Tensor, boundary: torch.Tensor | None = None) -> torch.Tensor:
        """B x C x T x H x W normalised frames (0 past each length) -> B x classes."""
        batch, _, time = video.shape[:3]
        padding = torch.arange(time, device=video.device) >= lengths.to(video.device)[:, None]  # B x T
        keep = (~padding).to(video.dtype)
        x = self.stem(video * keep[:, None, :, None, None])
        frames = x.transpose(1, 2)[~padding].contiguous(memory_format=torch.channels_last)  # real frames only
        frames = self.stages(frames)  # N x C x h x w
        features = F.glu(self.head(frames).mean(dim=(2, 3)), dim=-1)
        x = features.new_zeros(batch, time, features.shape[-1])
        x[~padding] = features
        if self.boundary is not None:
            if boundary is None:
                raise ValueError("this EfLip was built with data.word_boundary: the batch needs 'boundary'")
            x = x + boundary[..., None].to(x.dtype) * self.boundary
        x = self.positions(x)
        x = self.transformer(x, src_key_padding_mask=padding)
        x = x.transpose(1, 2)  # B x hidden x T
        for block in self.tcn:
            x = block(x, keep[:, None, :])
        pooled = (x * keep[:, None, :]).sum(-1) / keep.sum(-1, keepdim=True).clamp(min=1)
        return self.classifier(self.dropout(pooled))

    def normalise(self, video: torch.Tensor) -> torch.Tensor:
        return (video.float() / 255 - self.mean) / self.std

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        video, lengths, labels = self.normalise(batch["video"]), batch["video_lengths"], batch["labels"]
        boundary = batch.get("boundary")
        if not (self.training and self.mixup_alpha > 0):
            logits = self.logits(video, lengths, boundary)
            if not len(labels):  # a user's video (dataset.video_sample): no word to score against
                return {"logits": logits}
            smoothing = self.label_smoothing if self.training else 0.0
            return {"loss": F.cross_entropy(logits, labels, label_smoothing=smoothing), "logits": logits}
        lam = float(torch.distributions.Beta(self.mixup_alpha, self.mixup_alpha).sample())
        order = torch.randperm(video.shape[0], device=video.device)
        lengths = lengths.to(video.device)
        mixed = lam * video + (1 - lam) * video[order]
        mixed_boundary = None if boundary is None else lam * boundary + (1 - lam) * boundary[order]
        logits = self.logits(mixed, torch.maximum(lengths, lengths[order]), mixed_boundary)
        loss = lam * F.cross_entropy(logits, labels, label_smoothing=self.label_smoothing) \
            + (1 - lam) * F.cross_entropy(logits, labels[order], label_smoothing=self.label_smoothing)
        return {"loss": loss, "logits": logits}

    def decode(self, outputs: dict[str, torch.Tensor], batch: dict[str, Any]) -> list[list[int]]:
        """Word ids per sample, best first (the top 5, or every word when fewer)."""
        logits = outputs["logits"]
        return logits.topk(min(TOP_K, logits.shape[-1]), dim=-1).indices.tolist()


class TemporalBlock(nn.Module):
    """Two dilated 1D convolutions (BatchNorm, PReLU, dropout) and a residual; keeps the length."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, dilation: int, dropout: float) -> None:
        super().__init__()
        if kernel_size % 2 == 0:
            raise ValueError(f"tcn.kernel_size must be odd to keep every frame, got {kernel_size}")
        padding = dilation * (kernel_size - 1) // 2
        self.conv1 = nn.Conv1d(in_channels, out_channels, kernel_size, padding=padding, dilation=dilation)
        self.conv2 = nn.Conv1d(out_channels, out_channels, kernel_size, padding=padding, dilation=dilation)
        self.norm1, self.norm2 = nn.BatchNorm1d(out_channels), nn.BatchNorm1d(out_channels)
        self.act1, self.act2 = nn.PReLU(), nn.PReLU()
        self.dropout = nn.Dropout(dropout)
        self.residual = nn.Conv1d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """x: B x C x T; keep: B x 1 x T, 0 on padding (zeroed before each convolution)."""
        out = self.dropout(self.act1(self.norm1(self.conv1(x * keep))))
        out = self.dropout(self.act2(self.norm2(self.conv2(out * keep))))
        return out + self.residual(x)
