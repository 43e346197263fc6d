"""Optimizers with per-module learning rates, per-iteration LR schedules, and EMA of weights."""
from __future__ import annotations

import math
from typing import Any, Callable

import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from utils.errors import ConfigError


def build_optimizer(model: torch.nn.Module, opt_cfg: dict[str, Any]) -> torch.optim.Optimizer:
    """One param group per learning-rate entry; a parameter takes the entry of its longest matching
    module prefix (`learning_rate: {default: 1e-3, gru1: 1e-4}`), `default` otherwise. An entry for a
    frozen module (e.g. Sign2Text's recognition branch on cached head features) has nothing to train."""
    rates = opt_cfg["learning_rate"]
    params = dict(model.named_parameters())
    groups: dict[str, list[torch.nn.Parameter]] = {key: [] for key in rates}
    owners = {name: _owner(name, rates) for name in params}
    for name, param in params.items():
        if param.requires_grad:
            groups[owners[name]].append(param)
    for key in groups:
        if key != "default" and key not in owners.values():
            modules = sorted({n.split(".")[0] for n in params})
            raise ConfigError(
                f"training.optimization.learning_rate.{key}: no parameters under a module "
                f"named '{key}'; modules of this model: {', '.join(modules)}"
            )
    param_groups = [{"params": p, "lr": rates[k], "name": k} for k, p in groups.items() if p]
    kind, wd = opt_cfg["optimizer"], opt_cfg["weight_decay"]
    if kind == "SGD":
        return torch.optim.SGD(param_groups, momentum=opt_cfg["momentum"], weight_decay=wd)
    optimizer_class = torch.optim.AdamW if kind == "AdamW" else torch.optim.Adam
    return optimizer_class(param_groups, betas=tuple(opt_cfg["betas"]), weight_decay=wd)


def _owner(param_name: str, rates: dict[str, float]) -> str:
    matches = [k for k in rates if k != "default" and (param_name == k or param_name.startswith(k + "."))]
    return max(matches, key=len) if matches else "default"


def lr_factor(opt_cfg: dict[str, Any], total_steps: int, steps_per_epoch: int) -> Callable[[int], float]:
    """The multiplier of each group's peak LR at optimizer step `s` (0-based), for LambdaLR.

    Linear warmup reaches the peak at the end of warmup, never above it. Cosine decays towards
    `min_lr_ratio` and stays above it until after the last step, so no step runs at LR 0.
    """
    warmup = min(round(opt_cfg["warmup_epochs"] * steps_per_epoch), max(total_steps - 1, 0))
    floor = opt_cfg["min_lr_ratio"]
    kind = opt_cfg["scheduler"]
    milestones = sorted(round(m * steps_per_epoch) for m in opt_cfg["milestones"])

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        if kind == "cosine":
            progress = (step - warmup + 1) / (total_steps - warmup + 1)
            return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
        if kind == "step":
            return opt_cfg["gamma"] ** sum(step >= m for m in milestones)
        return 1.0

    return factor


def build_scheduler(
    optimizer: torch.optim.Optimizer, opt_cfg: dict[str, Any], total_steps: int, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(opt_cfg, total_steps, steps_per_epoch))


def build_ema(model: torch.nn.Module, decay: float) -> AveragedModel:
    """Exponential moving average of parameters and buffers (BatchNorm statistics included)."""
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
