"""GRID video input: our sample pipeline against the floor of raw decord decoding, side by side.

    python benchmarks/grid_video_input.py --quick          # under a minute on 2 CPU cores
    python benchmarks/grid_video_input.py --root data/demo/grid --repeats 7

Each repeat times both ways over the same videos, alternating which goes first; the medians and their
ratio are printed. "ours" is `GridDataset.__getitem__` (decode, resize, channel order, float tensor);
the baseline decodes every frame with decord and does nothing else.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dataset.grid import GridDataset  # noqa: E402
from dataset.synthetic import generate  # noqa: E402
from dataset.video import read_video  # noqa: E402
from utils.config import TASK_SCHEMAS, resolve_section  # noqa: E402


def data_config(root: Path, height: int, width: int) -> dict:
    raw = {"root": str(root), "video_pattern": "videos/{speaker}/{id}.mpg", "train": str(root / "train.txt"),
           "dev": str(root / "dev.txt"), "input": {"height": height, "width": width}}
    return resolve_section(raw, TASK_SCHEMAS["lip_sentence"]["data"], prefix="data.")


def clips_per_second(fn, count: int) -> float:
    start = time.perf_counter()
    for i in range(count):
        fn(i)
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, help="a GRID-layout corpus (default: a generated one)")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--size", type=int, nargs=2, default=(32, 64), metavar=("H", "W"))
    args = parser.parse_args()
    root = args.root or generate(tempfile.mkdtemp(), only=["grid"], scale=0.1, log=None)["grid"]
    dataset = GridDataset(data_config(root, *args.size), "train", train=True, seed=0)
    count = min(len(dataset), 40 if args.quick else 200)
    repeats = 3 if args.quick else args.repeats
    ways = {"decord decode only": lambda i: read_video(dataset.video_path(i)), "ours": dataset.__getitem__}
    rates: dict[str, list[float]] = {name: [] for name in ways}
    for r in range(repeats):
        for name in (list(ways) if r % 2 == 0 else list(reversed(ways))):
            rates[name].append(clips_per_second(ways[name], count))
    medians = {name: statistics.median(values) for name, values in rates.items()}
    print(f"{count} GRID clips of 75 frames, read at {args.size[0]}x{args.size[1]}, {repeats} repeats (median):")
    for name, value in medians.items():
        print(f"  {name:<20} {value:8.1f} clips/s")
    print(f"  ours / decode only   {medians['ours'] / medians['decord decode only']:8.2f}")


if __name__ == "__main__":
    main()
