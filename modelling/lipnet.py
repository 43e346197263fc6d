"""LipNet (Assael et al. 2016) for GRID sentences: 3D convolutions, two BiGRUs, CTC over characters.

Module names and shapes follow LipNet-PyTorch, so its published GRID checkpoints load strictly:
conv1/2/3, gru1/gru2 (single-layer bidirectional), FC. `batch_norm=True` adds BatchNorm after each
convolution (bn1/2/3): not in the published model, but it shortens CTC's initial all-blank plateau
several times over, which a CPU demo needs. Padded frames are masked after every
convolution and the GRUs run on packed sequences, so each sample's output depends only on itself.
"""
from __future__ import annotations

import math
from itertools import count
from typing import Any

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from utils.ctc import ctc_loss, decode, infeasible_targets


class LipNet(nn.Module):
    def __init__(
        self,
        num_classes: int = 28,
        input_size: tuple[int, int] = (64, 128),
        channels: tuple[int, int, int] = (32, 64, 96),
        hidden_size: int = 256,
        dropout: float = 0.5,
        batch_norm: bool = False,
    ) -> None:
        super().__init__()
        self.beam_size = 1  # CTC beam width for decode (testing.cfg.recognition.beam_size); 1 is greedy
        c1, c2, c3 = channels
        self.conv1 = nn.Conv3d(3, c1, (3, 5, 5), (1, 2, 2), (1, 2, 2))
        self.conv2 = nn.Conv3d(c1, c2, (3, 5, 5), (1, 1, 1), (1, 2, 2))
        self.conv3 = nn.Conv3d(c2, c3, (3, 3, 3), (1, 1, 1), (1, 1, 1))
        self.pool = nn.MaxPool3d((1, 2, 2), (1, 2, 2))
        # Identity holds no tensors, so without BatchNorm the checkpoint keys stay the published ones.
        # forward reads these attributes on every call: SyncBatchNorm conversion replaces them.
        self.bn1, self.bn2, self.bn3 = (nn.BatchNorm3d(c) if batch_norm else nn.Identity() for c in channels)
        height, width = (self._feature_size(n, dim) for n, dim in zip(input_size, (1, 2)))
        if height < 1 or width < 1:
            minimum = tuple(next(n for n in count(1) if self._feature_size(n, dim) > 0) for dim in (1, 2))
            raise ValueError(f"LipNet input_size {tuple(input_size)} is too small: "
                             f"the three convolution + pooling stages need at least {minimum} (height, width)")
        self.gru1 = nn.GRU(c3 * height * width, hidden_size, 1, bidirectional=True)
        self.gru2 = nn.GRU(2 * hidden_size, hidden_size, 1, bidirectional=True)
        self.FC = nn.Linear(2 * hidden_size, num_classes)
        self.dropout = nn.Dropout(dropout)
        self.dropout3d = nn.Dropout3d(dropout)
        self._init_weights()

    def _feature_size(self, size: int, dim: int) -> int:
        """Height (dim 1) or width (dim 2) after conv1/pool/conv2/pool/conv3/pool, for an input of `size`."""
        for conv in (self.conv1, self.conv2, self.conv3):
            size = (size + 2 * conv.padding[dim] - conv.kernel_size[dim]) // conv.stride[dim] + 1
            size = (size - self.pool.kernel_size[dim]) // self.pool.stride[dim] + 1
        return size

    def _init_weights(self) -> None:
        for conv in (self.conv1, self.conv2, self.conv3):
            nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")
            nn.init.zeros_(conv.bias)
        nn.init.kaiming_normal_(self.FC.weight, nonlinearity="sigmoid")
        nn.init.zeros_(self.FC.bias)
        for gru in (self.gru1, self.gru2):
            hidden = gru.hidden_size
            bound = math.sqrt(3) * math.sqrt(2 / (gru.input_size + hidden))
            for suffix in ("_l0", "_l0_reverse"):
                weight_ih, weight_hh = getattr(gru, "weight_ih" + suffix), getattr(gru, "weight_hh" + suffix)
                for gate in range(3):
                    rows = slice(gate * hidden, (gate + 1) * hidden)
                    nn.init.uniform_(weight_ih[rows], -bound, bound)
                    nn.init.orthogonal_(weight_hh[rows])
                nn.init.zeros_(getattr(gru, "bias_ih" + suffix))

    def encode(self, video: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """B x 3 x T x H x W frames (uint8, or floats already / 255) -> B x T x classes log-probabilities."""
        if video.dtype == torch.uint8:
            video = video.float().div_(255.0)
        time_mask = (torch.arange(video.shape[2], device=video.device) < lengths.to(video.device)[:, None])
        time_mask = time_mask[:, None, :, None, None].to(video.dtype)
        x = video
        for conv, norm in ((self.conv1, self.bn1), (self.conv2, self.bn2), (self.conv3, self.bn3)):
            x = self.pool(self.dropout3d(torch.relu(norm(conv(x)))) * time_mask)
        x = x.permute(2, 0, 1, 3, 4).flatten(2)  # T x B x C*H*W
        for gru in (self.gru1, self.gru2):
            packed = pack_padded_sequence(x, lengths.cpu(), enforce_sorted=False)
            x, _ = pad_packed_sequence(gru(packed)[0], total_length=video.shape[2])
            x = self.dropout(x)
        return self.FC(x).transpose(0, 1).log_softmax(-1)

    def forward(self, batch: dict[str, Any]) -> dict[str, Any]:
        log_probs = self.encode(batch["video"], batch["video_lengths"])
        targets = (batch["video_lengths"], batch["labels"], batch["label_lengths"])
        return {"loss": ctc_loss(log_probs, *targets), "log_probs": log_probs,
                "num_infeasible": infeasible_targets(*targets)}

    def decode(self, outputs: dict[str, torch.Tensor], batch: dict[str, Any]) -> list[list[int]]:
        return decode(outputs["log_probs"], batch["video_lengths"], self.beam_size)
