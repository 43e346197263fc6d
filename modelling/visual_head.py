"""VisualHead of SingleStream-SLT: frontend features -> gloss features and gloss logits (for CTC).

linear projection -> masked BatchNorm -> ReLU -> positional encoding -> dropout -> temporal-convolution
feed-forward (pre-LayerNorm, residual) -> LayerNorm -> gloss classifier. Padded frames are excluded
from the BatchNorm statistics and zeroed before every temporal convolution, so a sample's output
depends only on its own frames.
"""
from __future__ import annotations

import math

import torch
from torch import nn


def time_mask(lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    """B x T boolean mask, True on valid frames."""
    return torch.arange(max_len, device=lengths.device) < lengths[:, None]


class MaskedBatchNorm1d(nn.BatchNorm1d):
    """BatchNorm over the valid frames of B x T x C features only."""

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        out = torch.zeros_like(x)
        out[mask] = super().forward(x[mask])
        return out


class SinusoidalPositions(nn.Module):
    def __init__(self, size: int, max_len: int = 10000) -> None:
        super().__init__()
        position = torch.arange(max_len).unsqueeze(1)
        frequency = torch.exp(torch.arange(0, size, 2) * (-math.log(10000.0) / size))
        table = torch.zeros(max_len, size)
        table[:, 0::2] = torch.sin(position * frequency)
        table[:, 1::2] = torch.cos(position * frequency)
        self.register_buffer("table", table, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.table[: x.shape[1]]


class TemporalFeedForward(nn.Module):
    """Pre-LayerNorm feed-forward whose two layers are temporal convolutions, with a residual."""

    def __init__(self, size: int, ff_size: int, kernel_sizes: tuple[int, int], dropout: float) -> None:
        super().__init__()
        self.layer_norm = nn.LayerNorm(size, eps=1e-6)
        self.conv1 = nn.Conv1d(size, ff_size, kernel_sizes[0], padding=kernel_sizes[0] // 2)
        self.conv2 = nn.Conv1d(ff_size, size, kernel_sizes[1], padding=kernel_sizes[1] // 2)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        keep = mask[:, None, :].to(x.dtype)
        h = self.layer_norm(x).transpose(1, 2) * keep
        h = self.dropout(torch.relu(self.conv1(h))) * keep
        h = self.dropout(self.conv2(h)).transpose(1, 2)
        return x + h


class VisualHead(nn.Module):
    def __init__(
        self,
        num_classes: int,
        input_size: int = 832,
        hidden_size: int = 512,
        ff_size: int = 2048,
        ff_kernel_sizes: tuple[int, int] = (3, 3),
        dropout: float = 0.1,
        positional_encoding: bool = True,
    ) -> None:
        super().__init__()
        self.fc1 = nn.Linear(input_size, hidden_size)
        self.bn1 = MaskedBatchNorm1d(hidden_size)
        self.positions = SinusoidalPositions(hidden_size) if positional_encoding else nn.Identity()
        self.dropout = nn.Dropout(dropout)
        self.feedforward = TemporalFeedForward(hidden_size, ff_size, ff_kernel_sizes, dropout)
        self.layer_norm = nn.LayerNorm(hidden_size, eps=1e-6)
        self.gloss_output_layer = nn.Linear(hidden_size, num_classes)

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> dict[str, torch.Tensor]:
        """B x T x input_size features -> gloss features (B x T x hidden), logits, probabilities."""
        mask = time_mask(lengths, features.shape[1])
        x = torch.relu(self.bn1(self.fc1(features), mask))
        x = self.dropout(self.positions(x))
        x = self.layer_norm(self.feedforward(x, mask))
        return gloss_outputs(x, self.gloss_output_layer(x))

    @property
    def hidden_size(self) -> int:
        return self.gloss_output_layer.in_features

    @property
    def num_classes(self) -> int:
        return self.gloss_output_layer.out_features


def gloss_outputs(gloss_feature: torch.Tensor, logits: torch.Tensor) -> dict[str, torch.Tensor]:
    """The VisualHead's outputs from its gloss features and gloss logits."""
    return {
        "gloss_feature": gloss_feature,
        "gloss_logits": logits,
        "gloss_probabilities": logits.softmax(-1),
        "gloss_log_probabilities": logits.log_softmax(-1),
    }
