"""Training step time on CPU: fp32 eager against channels-last, bf16 autocast and torch.compile, side by side.

    python benchmarks/train_step.py --quick              # under a minute on 2 CPU cores (small shapes, no compile)
    python benchmarks/train_step.py --steps 5            # the shapes below, with torch.compile

One step is forward + backward + Adam step at a fixed shape, on random inputs and labels:
- LipNet at its GRID shape: B x 3 x 75 x 64 x 128 uint8 frames, 28 characters (--quick: 16 x 32 x 64).
- S3D-S2G RecognitionNetwork as the Phoenix-2014T recipe (S3D to Mixed_4f, first block frozen,
  VisualHead 512, 1124 glosses), from random weights: B x 3 x 64 x 112 x 112 clips, 112 x 112 crops
  (--quick: 16 frames, 48 x 48).
- EfLip-T: measured only once modelling/eflip.py exists.
Every variant trains its own copy of the same initial weights; each repeat runs one step of every
variant, in rotating order, after warm-up steps (compilation happens there and is reported apart).
Printed: median seconds per step, the ratio to fp32 eager, and how far the bf16 loss is from fp32's on
the same first batch.
"""
from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from modelling.lipnet import LipNet  # noqa: E402
from modelling.recognition import RecognitionNetwork  # noqa: E402
from utils.config import load_config  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def lipnet(quick: bool, batch: int) -> tuple[torch.nn.Module, dict[str, Any]]:
    frames, height, width = (16, 32, 64) if quick else (75, 64, 128)
    model = LipNet(num_classes=28, input_size=(height, width))
    return model, video_batch(batch, frames, height, width, classes=28, label_length=frames // 3)


def s3d_s2g(quick: bool, batch: int) -> tuple[torch.nn.Module, dict[str, Any]]:
    frames, size = (16, 48) if quick else (64, 112)
    cfg = load_config(ROOT / "experiments/configs/SingleStream/phoenix-2014t_s2g.yaml", check_paths=False,
                      opts=["model.RecognitionNetwork.s3d.pretrained_ckpt=null", f"data.transform_cfg.img_size={size}"])
    part = cfg["model"]["RecognitionNetwork"]
    model = RecognitionNetwork({**part, "augmentation": cfg["data"]["transform_cfg"]}, 1124)
    return model, video_batch(batch, frames, size, size, classes=1124, label_length=frames // 8)


def video_batch(batch: int, frames: int, height: int, width: int, classes: int, label_length: int) -> dict[str, Any]:
    generator = torch.Generator().manual_seed(0)
    return {
        "video": torch.randint(0, 256, (batch, 3, frames, height, width), dtype=torch.uint8, generator=generator),
        "video_lengths": torch.full((batch,), frames),
        "labels": torch.randint(1, classes, (batch * label_length,), generator=generator),
        "label_lengths": torch.full((batch,), label_length),
    }


def variants(model: torch.nn.Module, compile_too: bool) -> dict[str, tuple[torch.nn.Module, Callable]]:
    """name -> (model copy, context for its forward)."""
    bf16 = lambda: torch.autocast("cpu", dtype=torch.bfloat16)  # noqa: E731
    out = {"fp32 eager": (copy.deepcopy(model), nullcontext),
           "channels_last_3d": (copy.deepcopy(model).to(memory_format=torch.channels_last_3d), nullcontext),
           "bf16 autocast": (copy.deepcopy(model), bf16)}
    if compile_too:
        out["torch.compile"] = (torch.compile(copy.deepcopy(model)), nullcontext)
    return out


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
    ways = variants(model, args.compile)
    if "channels_last_3d" in ways:
        batch_cl = {**batch, "video": batch["video"].contiguous(memory_format=torch.channels_last_3d)}
    with torch.no_grad():
        torch.manual_seed(0)
        fp32 = float(ways["fp32 eager"][0](batch)["loss"])
        torch.manual_seed(0)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf16 = float(ways["bf16 autocast"][0](batch)["loss"])
    optimizers = {n: torch.optim.Adam([p for p in m.parameters() if p.requires_grad], lr=1e-4) for n, (m, _) in ways.items()}
    inputs = {n: batch_cl if n == "channels_last_3d" else batch for n in ways}
    warmup: dict[str, float] = {}
    for n, (m, context) in ways.items():
        warmup[n] = sum(step(m, optimizers[n], context, inputs[n]) for _ in range(args.warmup))
    times: dict[str, list[float]] = {n: [] for n in ways}
    names = list(ways)
    for r in range(args.steps):
        for n in names[r % len(names):] + names[: r % len(names)]:
            m, context = ways[n]
            times[n].append(step(m, optimizers[n], context, inputs[n]))
    base = statistics.median(times["fp32 eager"])
    shape = "x".join(map(str, batch["video"].shape))
    print(f"{name}: video {shape}, {args.steps} steps per variant (median), {args.warmup} warm-up, "
          f"{torch.get_num_threads()} threads")
    for n, values in times.items():
        median = statistics.median(values)
        print(f"  {n:<18} {median:7.3f} s/step  {base / median:5.2f}x fp32 eager speed   (warm-up {warmup[n]:.1f} s)")
    print(f"  first-batch loss: fp32 {fp32:.5f}, bf16 autocast {bf16:.5f} (relative difference {abs(bf16 - fp32) / abs(fp32):.2e})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--models", nargs="+", default=["lipnet", "s3d_s2g", "eflip_t"])
    parser.add_argument("--no-compile", dest="compile", action="store_false")
    args = parser.parse_args()
    if args.quick:
        args.steps, args.warmup, args.compile = 3, 1, False
    builders = {"lipnet": lipnet, "s3d_s2g": s3d_s2g}
    for name in args.models:
        if name == "eflip_t":
            if not (ROOT / "modelling/eflip.py").exists():
                print("eflip_t: skipped, modelling/eflip.py does not exist in this checkout")
                continue
            sys.exit("eflip_t: modelling/eflip.py exists now; add its builder to this benchmark")
        torch.manual_seed(0)
        measure(name, *builders[name](args.quick, args.batch), args)


if __name__ == "__main__":
    main()
