"""Training step time on CPU: fp32 eager against channels-last, bf16 autocast and torch.compile, side by side.

    python benchmarks/train_step.py --quick              # small shapes, no compile: about 2 minutes on 2 busy CPU
                                                         # cores, most of it in bf16 autocast (emulated on AVX2)
    python benchmarks/train_step.py --steps 5            # the shapes below, with torch.compile (minutes per model)

One step is forward + backward + Adam step at a fixed shape, on random inputs and labels:
- LipNet at its GRID shape: B x 3 x 75 x 64 x 128 uint8 frames, 28 characters (--quick: 16 x 32 x 64).
- S3D-S2G RecognitionNetwork as the Phoenix-2014T recipe (S3D to Mixed_4f, first block frozen,
  VisualHead 512, 1124 glosses), from random weights: B x 3 x 64 x 112 x 112 clips, 112 x 112 crops
  (--quick: 16 frames, 48 x 48).
- EfLip-T as experiments/configs/EfLip/lrw_t.yaml (mixup 0.4, 500 words), from random weights:
  B x 1 x 29 x 88 x 88 grey mouth crops (--quick: 8 frames, 48 x 48).
Channels-last puts every Conv3d in channels_last_3d and every Conv2d in channels_last, and the input video
in channels_last_3d; channels-first puts every convolution and its input in the default layout (EfLip runs its
per-frame network channels-last by default; this variant measures that choice). Every variant trains its own copy of the same initial weights; each repeat runs one step
of every variant, in rotating order, after warm-up steps (compilation happens there and is reported apart).
Printed: median seconds per step, the ratio to fp32 eager, and how far the bf16 loss is from fp32's on
the same first batch.
"""
from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import THREADS_HELP, rotated  # noqa: E402
from modelling import spatial_augmentation  # noqa: E402
from modelling.eflip import EfLip  # noqa: E402
from modelling.lipnet import LipNet  # noqa: E402
from modelling.recognition import RecognitionNetwork  # noqa: E402
from utils.config import load_config  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def lipnet(quick: bool, batch: int) -> tuple[torch.nn.Module, dict[str, Any]]:
    frames, height, width = (16, 32, 64) if quick else (75, 64, 128)
    model = LipNet(num_classes=28, input_size=(height, width))
    return model, {**video_batch(batch, 3, frames, height, width), **ctc_labels(batch, 28, frames // 3)}


def s3d_s2g(quick: bool, batch: int) -> tuple[torch.nn.Module, dict[str, Any]]:
    frames, size = (16, 48) if quick else (64, 112)
    cfg = load_config(ROOT / "experiments/configs/SingleStream/phoenix-2014t_s2g.yaml", check_paths=False,
                      opts=["model.RecognitionNetwork.s3d.pretrained_ckpt=null", f"data.transform_cfg.img_size={size}"])
    part = cfg["model"]["RecognitionNetwork"]
    model = RecognitionNetwork({**part, "augmentation": spatial_augmentation(cfg)}, 1124)
    return model, {**video_batch(batch, 3, frames, size, size), **ctc_labels(batch, 1124, frames // 8)}


def eflip_t(quick: bool, batch: int) -> tuple[torch.nn.Module, dict[str, Any]]:
    frames, size = (8, 48) if quick else (29, 88)
    cfg = load_config(ROOT / "experiments/configs/EfLip/lrw_t.yaml", check_paths=False)
    data = cfg["data"]
    model = EfLip(cfg["model"]["EfLip"], 500, (data["input"]["mean"], data["input"]["std"]),
                  mixup_alpha=data["augmentation"]["mixup"])
    labels = torch.randint(0, 500, (batch,), generator=torch.Generator().manual_seed(1))
    return model, {**video_batch(batch, 1, frames, size, size), "labels": labels}


def video_batch(batch: int, channels: int, frames: int, height: int, width: int) -> dict[str, torch.Tensor]:
    shape = (batch, channels, frames, height, width)
    return {"video": torch.randint(0, 256, shape, dtype=torch.uint8, generator=torch.Generator().manual_seed(0)),
            "video_lengths": torch.full((batch,), frames)}


def ctc_labels(batch: int, classes: int, length: int) -> dict[str, torch.Tensor]:
    return {"labels": torch.randint(1, classes, (batch * length,), generator=torch.Generator().manual_seed(1)),
            "label_lengths": torch.full((batch,), length)}


def channels_last(model: torch.nn.Module) -> torch.nn.Module:
    for module in model.modules():
        if isinstance(module, torch.nn.Conv3d):
            module.to(memory_format=torch.channels_last_3d)
        elif isinstance(module, torch.nn.Conv2d):
            module.to(memory_format=torch.channels_last)
    return model


def channels_first(model: torch.nn.Module) -> torch.nn.Module:
    """Every convolution in the default layout, its input made contiguous: what a model that chose
    channels-last (EfLip's per-frame network) is measured against."""
    for module in model.modules():
        if isinstance(module, (torch.nn.Conv2d, torch.nn.Conv3d)):
            module.to(memory_format=torch.contiguous_format)
            module.register_forward_pre_hook(lambda _, args: (args[0].contiguous(), *args[1:]))
    return model


def variants(model: torch.nn.Module, names: list[str]) -> dict[str, tuple[torch.nn.Module, Callable]]:
    """name -> (model copy, context for its forward), for the named variants (fp32 eager always)."""
    bf16 = lambda: torch.autocast("cpu", dtype=torch.bfloat16)  # noqa: E731
    makers = {"channels-last": lambda: (channels_last(copy.deepcopy(model)), nullcontext),
              "channels-first": lambda: (channels_first(copy.deepcopy(model)), nullcontext),
              "bf16 autocast": lambda: (copy.deepcopy(model), bf16),
              "torch.compile": lambda: (torch.compile(copy.deepcopy(model)), nullcontext)}
    return {"fp32 eager": (copy.deepcopy(model), nullcontext)} | {n: makers[n]() for n in names if n in makers}


def step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, context: Callable, batch: dict[str, Any]) -> float:
    start = time.perf_counter()
    with context():
        loss = model(batch)["loss"]
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return time.perf_counter() - start


def measure(name: str, model: torch.nn.Module, batch: dict[str, Any], args: argparse.Namespace) -> None:
    model.train()
    ways = variants(model, args.variants)
    inputs = {n: batch for n in ways}
    if "channels-last" in ways:
        inputs["channels-last"] = {**batch, "video": batch["video"].contiguous(memory_format=torch.channels_last_3d)}
    losses = {}
    with torch.no_grad():
        for n in ("fp32 eager", "bf16 autocast"):
            if n in ways:
                torch.manual_seed(0)
                with ways[n][1]():
                    losses[n] = float(ways[n][0](batch)["loss"])
    optimizers = {n: torch.optim.Adam([p for p in m.parameters() if p.requires_grad], lr=1e-4)
                  for n, (m, _) in ways.items()}
    warmup: dict[str, float] = {}
    for n, (m, context) in ways.items():
        warmup[n] = sum(step(m, optimizers[n], context, inputs[n]) for _ in range(args.warmup))
    times: dict[str, list[float]] = {n: [] for n in ways}
    names = list(ways)
    for r in range(args.steps):
        for n in rotated(names, r):
            m, context = ways[n]
            times[n].append(step(m, optimizers[n], context, inputs[n]))
    base = statistics.median(times["fp32 eager"])
    shape = "x".join(map(str, batch["video"].shape))
    print(f"{name}: video {shape}, {args.steps} steps per variant (median), {args.warmup} warm-up, "
          f"{torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f}")
    for n, values in times.items():
        median = statistics.median(values)
        print(f"  {n:<18} {median:7.3f} s/step  {base / median:5.2f}x fp32 eager speed   (warm-up {warmup[n]:.1f} s)")
    if len(losses) == 2:
        fp32, bf16 = losses.values()
        print(f"  first-batch loss: fp32 {fp32:.5f}, bf16 autocast {bf16:.5f} "
              f"(relative difference {abs(bf16 - fp32) / abs(fp32):.2e})")
    sys.stdout.flush()


BUILDERS = {"lipnet": lipnet, "s3d_s2g": s3d_s2g, "eflip_t": eflip_t}
VARIANTS = ["channels-last", "channels-first", "bf16 autocast", "torch.compile"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help=THREADS_HELP)
    parser.add_argument("--models", nargs="+", choices=list(BUILDERS), default=list(BUILDERS))
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=VARIANTS,
                        help="besides fp32 eager (--quick leaves out torch.compile)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.quick:
        args.steps, args.warmup = 3, 1
        args.variants = [v for v in args.variants if v != "torch.compile"]
    for name in args.models:
        torch.manual_seed(0)
        measure(name, *BUILDERS[name](args.quick, args.batch), args)


if __name__ == "__main__":
    main()
