"""Sign2Text training on cached features: our memory-mapped cache against SLRT's gzip pickle in RAM, side by side.

    python benchmarks/cached_features.py --quick          # 300 samples, 20 steps: under a minute on 2 CPU cores
    python benchmarks/cached_features.py                  # the Phoenix-2014T train split's size, 200 steps

Features as S3D to Mixed_4f gives them (832 channels, `S3DFrontend.output_lengths` steps: a quarter of the
frames), random and ReLU-like (about half zeros), for the frame counts of the Phoenix-2014T train annotations
when `--annotations` is readable, else for counts drawn like them. They are written once, into a temporary
folder deleted at the end, in two ways:
- ours: dataset/feature_cache.py's format through its writers (one float16 .npy per sample, index.json),
  read per sample by `FeatureCache.read` (`np.load(mmap_mode="r")`, a float32 copy);
- SLRT's: one gzip pickle of the split, a list of dicts (name, gloss, text, num_frames, sign: a float32
  tensor), loaded whole at start as SLRT's `load_dataset_file` does (`gzip.open` + `pickle.load`).
The pickle holds the float16 values upcast, so both ways train on the same numbers (checked: same losses).

Each way runs in a child process of its own, so its peak memory is its own: build the dataset, then train
for N steps with training.py's loader (`TrainBatchSampler` + `make_loader`; batch 2 and 2 workers, as in
phoenix-2014t_s2t.yaml) feeding Sign2Text's recognition branch on features (VisualHead 832 -> 512, 1124
glosses, CTC, Adam). Reported: start-up (building the dataset); steps/s after it, the CPU time per step of
the process and its workers (less disturbed by a shared machine than wall time) and how long a step waited
for its batch; and peak resident memory (max RSS) of the training process, of it after its imports (before
any data), and of its largest loader worker. The workers fork after start-up, so they share SLRT's features
in RAM, and a worker's RSS counts the pages it shares. The files were just written, so both ways read them
from the page cache. Repeats alternate which way runs first; medians and ratios to SLRT's way are printed.
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import pickle
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import THREADS_HELP, rotated  # noqa: E402
from dataset.annotations import load_annotations  # noqa: E402
from dataset.feature_cache import FeatureCache, claim, sample_file, write_index, write_sample  # noqa: E402
from dataset.loader import TrainBatchSampler, ctc_targets, make_loader  # noqa: E402
from modelling.visual_head import VisualHead  # noqa: E402
from utils.ctc import ctc_loss  # noqa: E402

CHANNELS, GLOSSES, SPLIT = 832, 1124, "train"
META = {"level": "frontend", "frontend_sha256": "synthetic", "head_sha256": None, "preprocessing": {}}
PHOENIX_TRAIN = 7096
PHOENIX_FRAMES = (116.6, 49.9, 16)  # mean, sd, min frames of the Phoenix-2014T train annotations


def samples(annotations: Path, count: int, seed: int) -> list[dict[str, Any]]:
    """name, gloss, text, num_frames and gloss label ids of `count` samples: the annotations' own (repeated
    if needed) when readable, else synthetic ones with Phoenix-2014T-like frame counts."""
    rng = np.random.default_rng(seed)
    if annotations.is_file():
        real = load_annotations(annotations)
        chosen = [real[i % len(real)] for i in range(count)]
        rows = [(s.gloss, s.text, s.num_frames, len(s.target_gloss.split())) for s in chosen]
    else:
        mean, sd, least = PHOENIX_FRAMES
        frames = np.maximum(rng.gamma((mean / sd) ** 2, sd**2 / mean, count).round().astype(int), least)
        rows = [("GLOSS " * (f // 15), "text .", int(f), max(1, f // 15)) for f in frames]
    return [{"name": f"{SPLIT}/sample-{i}", "gloss": gloss, "text": text, "num_frames": frames,
             "labels": rng.integers(1, GLOSSES, n).tolist()} for i, (gloss, text, frames, n) in enumerate(rows)]


def write_both(root: Path, rows: list[dict[str, Any]], seed: int) -> None:
    """Our cache under root/cache, SLRT's pickle as root/slrt.train.gz, and the labels as root/samples.json."""
    from modelling.s3d import S3DFrontend  # here only: torchvision would add to the children's measured memory

    rng = np.random.default_rng(seed)
    lengths = S3DFrontend().output_lengths(torch.tensor([r["num_frames"] for r in rows])).tolist()
    cache, slrt = root / "cache", []
    claim(cache, META)
    for row, length in zip(rows, lengths):
        features = np.maximum(rng.standard_normal((length, CHANNELS), dtype=np.float32), 0).astype(np.float16)
        write_sample(sample_file(cache, SPLIT, row["name"]), features)
        slrt.append({key: row[key] for key in ("name", "gloss", "text", "num_frames")}
                    | {"sign": torch.from_numpy(features.astype(np.float32))})
    write_index(cache, SPLIT, [r["name"] for r in rows])
    # The level changes the writing time, hardly the reading that is timed.
    with gzip.open(root / "slrt.train.gz", "wb", compresslevel=1) as f:
        pickle.dump(slrt, f)
    (root / "samples.json").write_text(json.dumps([{"name": r["name"], "labels": r["labels"], "length": n}
                                                   for r, n in zip(rows, lengths)]))


class Features(torch.utils.data.Dataset):
    """Sample i: `read(name)` (T x 832 float32 features) and its gloss labels."""

    def __init__(self, rows: list[dict[str, Any]], read: Callable[[str], torch.Tensor]) -> None:
        self.rows, self.read = rows, read

    def __len__(self) -> int:
        return len(self.rows)

    def name(self, index: int) -> str:
        return self.rows[index]["name"]

    def __getitem__(self, index: int) -> dict[str, Any]:
        row = self.rows[index]
        return {"features": self.read(row["name"]), "labels": torch.tensor(row["labels"])}

    @staticmethod
    def collate(good: list[dict[str, Any]]) -> dict[str, Any]:
        return {"features": torch.nn.utils.rnn.pad_sequence([s["features"] for s in good], batch_first=True),
                "feature_lengths": torch.tensor([len(s["features"]) for s in good]), **ctc_targets(good)}


def peak_rss_kib() -> int:
    """This process's peak RSS (Linux's VmHWM). Not ru_maxrss: that keeps the parent's peak across fork + exec."""
    status = Path("/proc/self/status").read_text()
    return int(status.split("VmHWM:")[1].split()[0])


def train(way: str, root: Path, steps: int, batch: int, workers: int) -> dict[str, Any]:
    """One way, in this (child) process: start-up, N training steps, peak RSS (KiB) of it and of its workers."""
    rows = json.loads((root / "samples.json").read_text())
    imported = peak_rss_kib()  # torch and the toolkit, before any data
    start = time.perf_counter()
    if way == "ours":
        read = FeatureCache(root / "cache", SPLIT, META).read
    else:
        with gzip.open(root / "slrt.train.gz", "rb") as f:
            by_name = {s["name"]: s for s in pickle.load(f)}  # our own file: plain pickle, as SLRT loads it
        read = lambda name: by_name[name]["sign"]  # noqa: E731
    startup = time.perf_counter() - start
    torch.manual_seed(0)
    head = VisualHead(GLOSSES, CHANNELS).train()
    optimizer = torch.optim.Adam(head.parameters(), lr=1e-3)
    sampler = TrainBatchSampler([r["length"] for r in rows], batch, rank=0, world_size=1, seed=0)
    cpu = time.process_time()
    batches = iter(make_loader(Features(rows, read), sampler, workers, seed=0))
    losses, waited = [], 0.0
    start = ready = time.perf_counter()
    for _, data in zip(range(min(steps, len(sampler))), batches):
        waited += time.perf_counter() - ready
        out = head(data["features"], data["feature_lengths"])
        loss = ctc_loss(out["gloss_log_probabilities"], data["feature_lengths"], data["labels"], data["label_lengths"])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(loss))
        ready = time.perf_counter()
    elapsed = time.perf_counter() - start
    del batches  # joins the workers, so that RUSAGE_CHILDREN covers them
    workers_usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = time.process_time() - cpu + workers_usage.ru_utime + workers_usage.ru_stime
    return {"startup_s": startup, "steps_per_s": len(losses) / elapsed, "wait_ms": 1e3 * waited / len(losses),
            "cpu_ms": 1e3 * cpu / len(losses), "losses": losses, "imported_rss_kib": imported,
            "rss_kib": peak_rss_kib(), "worker_rss_kib": workers_usage.ru_maxrss}


def in_child(way: str, root: Path, args: argparse.Namespace) -> dict[str, Any]:
    command = [sys.executable, __file__, "--child", way, "--root", str(root), "--steps", str(args.steps),
               "--batch", str(args.batch), "--workers", str(args.workers), "--threads", str(args.threads)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"{way}: the child process failed:\n{done.stderr}")
    return json.loads(done.stdout.splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--samples", type=int, default=PHOENIX_TRAIN)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help=THREADS_HELP + " (the training process's)")
    parser.add_argument("--annotations", type=Path, default=ROOT / "data/phoenix-2014t/phoenix-2014t.train",
                        help="SLRT annotations whose frame counts and gloss lengths to use, where readable")
    parser.add_argument("--child", choices=("ours", "slrt"), help=argparse.SUPPRESS)
    parser.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        torch.set_num_threads(args.threads)
        print(json.dumps(train(args.child, args.root, args.steps, args.batch, args.workers)))
        return
    if args.quick:
        args.samples, args.steps, args.repeats = 300, 20, 2
    root = Path(tempfile.mkdtemp(prefix="cached_features_"))
    try:
        rows = samples(args.annotations, args.samples, seed=0)
        start = time.perf_counter()
        write_both(root, rows, seed=1)
        written = time.perf_counter() - start
        sizes = {"ours": sum(f.stat().st_size for f in (root / "cache").rglob("*")),
                 "slrt": (root / "slrt.train.gz").stat().st_size}
        results: dict[str, list[dict[str, Any]]] = {"ours": [], "slrt": []}
        for r in range(args.repeats):
            for way in rotated(["slrt", "ours"], r):
                results[way].append(in_child(way, root, args))
    finally:
        shutil.rmtree(root)
    source = f"frame counts of {args.annotations.name}" if args.annotations.is_file() else "synthetic frame counts"
    print(f"{args.samples} samples ({source}), {args.steps} steps of batch {args.batch}, {args.workers} workers, "
          f"{args.threads} torch threads, {args.repeats} repeats (median), load average {os.getloadavg()[0]:.1f}, "
          f"files written in {written:.0f} s:")
    medians = {way: {key: statistics.median(run[key] for run in runs) for key in runs[0] if key != "losses"}
               for way, runs in results.items()}
    names = {"slrt": "SLRT gzip pickle", "ours": "ours, mmap cache"}
    for way, m in medians.items():
        print(f"  {names[way]:<17} start-up {m['startup_s']:5.2f} s, {m['steps_per_s']:5.2f} steps/s, per step "
              f"{m['cpu_ms']:4.0f} ms CPU and {m['wait_ms']:4.1f} ms waiting for data; "
              f"on disk {sizes[way] / 2**20:4.0f} MiB\n"
              f"  {'':<17} peak RSS {m['rss_kib'] / 2**10:5.0f} MiB ({m['imported_rss_kib'] / 2**10:4.0f} after the "
              f"imports), largest worker {m['worker_rss_kib'] / 2**10:5.0f} MiB")
    ours, slrt = medians["ours"], medians["slrt"]
    added = (ours["rss_kib"] - ours["imported_rss_kib"]) / (slrt["rss_kib"] - slrt["imported_rss_kib"])
    print(f"  ours / SLRT: speed {ours['steps_per_s'] / slrt['steps_per_s']:.2f}x (by CPU time "
          f"{slrt['cpu_ms'] / ours['cpu_ms']:.2f}x); peak RSS {ours['rss_kib'] / slrt['rss_kib']:.2f}x (after the "
          f"imports {added:.2f}x, largest worker {ours['worker_rss_kib'] / slrt['worker_rss_kib']:.2f}x)")
    same = all(run["losses"] == results["slrt"][0]["losses"] for runs in results.values() for run in runs)
    print(f"  same losses in every run: {'yes' if same else 'NO'}")


if __name__ == "__main__":
    main()
