"""training.py with numerical faults injected, for the fault tests: `python tests/fault_injection.py --config ...`.

Runs `training.main` unchanged, after hooking a fault into the model it builds. VLR_FAULT_INJECT lists
the faults as `KIND@STEP[:RANK]`, comma-separated, e.g. `nan@3:1,inf@5,nan_grad@6`:

- `nan`, `inf`: the loss of that training step is NaN or +inf;
- `nan_grad`: the loss stays finite, but every gradient that flows back from it is NaN;

on process RANK only, or on every process without `:RANK`. Steps count training forward passes from 1
in this process (so with gradient accumulation 1 and no resume, they are optimizer steps).
Works under torchrun too: torchrun runs this file in place of training.py.
"""
from __future__ import annotations

import os
from typing import Any

import torch

import training
from utils.cli import run_main


class _NaNGradient(torch.autograd.Function):
    """The identity, whose backward pass returns NaN."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        return x.clone()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        return torch.full_like(grad, float("nan"))


def parse_faults(spec: str, rank: int) -> dict[int, str]:
    """{step: kind} of the faults in `spec` that apply to process `rank`."""
    faults = {}
    for item in filter(None, spec.split(",")):
        kind, _, where = item.partition("@")
        step, _, on_rank = where.partition(":")
        if kind not in ("nan", "inf", "nan_grad"):
            raise ValueError(f"VLR_FAULT_INJECT: unknown fault {kind!r} in {item!r}")
        if not on_rank or int(on_rank) == rank:
            faults[int(step)] = kind
    return faults


def inject(model: torch.nn.Module, faults: dict[int, str]) -> None:
    """Replace the loss of the listed training steps, through a forward hook (the weights stay the model's)."""
    forwards = 0

    def hook(module: torch.nn.Module, inputs: Any, outputs: dict[str, Any]) -> dict[str, Any] | None:
        nonlocal forwards
        if not module.training:
            return None
        forwards += 1
        kind = faults.get(forwards)
        if kind is None:
            return None
        loss = outputs["loss"]
        loss = _NaNGradient.apply(loss) if kind == "nan_grad" else loss + float(kind)
        return {**outputs, "loss": loss}

    model.register_forward_hook(hook)


def main() -> None:
    faults = parse_faults(os.environ.get("VLR_FAULT_INJECT", ""), int(os.environ.get("RANK", "0")))
    build_model = training.build_model

    def build_with_faults(cfg: dict[str, Any], vocab: Any) -> torch.nn.Module:
        model = build_model(cfg, vocab)
        inject(model, faults)
        return model

    training.build_model = build_with_faults
    run_main(training.main)


if __name__ == "__main__":
    main()
