"""Evaluate a trained model on dev and test, or run it on your own videos: `python prediction.py --config FILE`.

Loads `training.model_dir/ckpts/best.ckpt` (or `--ckpt`, a checkpoint file or a folder written by
`utils.export`, or `--ckpt_name` in that folder; EMA weights when the run kept them), scores every split
with the decoding settings of `testing.cfg`, and writes `model_dir/<save_subdir>/<split>/summary.json` and
`results.jsonl` (one sample a line, with its errors), with pictures: the learning curve, and per split the CTC
alignment of its first sample or the most confused words. Works under torchrun: each sample is decoded on
exactly one rank. `--ckpt FILE` without `--config` uses the config stored in the checkpoint.

`--video PATH` (a video file, a folder of videos or of frames) prints what the model reads in each video
instead: glosses for sign models, the sentence for lip reading models, and for word models (LRW) the best
word, then the five best with their probabilities.
"""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any, Sequence

from dataset import build_dataset
from utils import plots
from utils.checkpoint import atomic_write
from utils.cli import base_parser, run_main
from utils.config import load_config
from utils.distributed import DistInfo, init_distributed, shutdown
from utils.evaluation import evaluate, metric_options
from utils.inference import Trained, load_trained, transcribe
from utils.logging import setup_logging
from utils.metrics import sample_errors

log = logging.getLogger("prediction")


def main(argv: Sequence[str] | None = None) -> None:
    parser = base_parser(__doc__.splitlines()[0], config_required=False)
    parser.add_argument("--ckpt", help="checkpoint file or exported folder (default: model_dir/ckpts/best.ckpt)")
    parser.add_argument("--ckpt_name", help="a file name in model_dir/ckpts/ (SLRT's argument)")
    parser.add_argument("--save_subdir", default="prediction", help="output folder under model_dir")
    parser.add_argument("--splits", nargs="+", default=["dev", "test"])
    parser.add_argument("--video", help="a video file, a folder of videos, or a folder of frames: print the model's reading")
    parser.add_argument("--crop_mouth", choices=("auto", "yes", "no"), default="auto",
                        help="lip reading with --video: crop the mouth region first (auto: unless the frames "
                             "already have the model input's aspect ratio)")
    args = parser.parse_args(argv)
    if args.config is None and args.ckpt is None:
        parser.error("give --config FILE, or --ckpt FILE to use the config stored in the checkpoint")
    cfg = load_config(args.config, args.opts) if args.config else None
    dist = init_distributed()
    try:
        setup_logging(None, dist.is_main)
        trained = load_trained(_checkpoint_path(args, cfg), cfg, args.opts, dist.device)
        if args.video:
            if dist.is_main:  # a few videos: one process reads them all
                _print_readings(trained, args.video, args.crop_mouth)
            return
        predict(trained, Path(trained.cfg["training"]["model_dir"]) / args.save_subdir, args.splits, dist)
    finally:
        shutdown()


def _checkpoint_path(args: argparse.Namespace, cfg: dict[str, Any] | None) -> Path:
    if args.ckpt:
        return Path(args.ckpt)
    return Path(cfg["training"]["model_dir"]) / "ckpts" / (args.ckpt_name or "best.ckpt")


def _print_readings(trained: Trained, path: str, crop_mouth: str) -> None:
    for spec, text in transcribe(trained, path, crop_mouth):
        print(f"{spec}\t{text}", flush=True)


def predict(trained: Trained, out_dir: Path, splits: Sequence[str], dist: DistInfo) -> dict[str, dict]:
    """Score each split with the trained model; returns {split: summary}."""
    cfg = trained.cfg
    params_m = sum(p.numel() for p in trained.model.parameters()) / 1e6  # reported beside accuracy, as papers do
    summaries, pictures = {}, []
    for split in splits:
        if cfg["data"].get(split) is None:
            log.info("%s: no data.%s given, skipped", split, split)
            continue
        dataset = build_dataset(cfg, split, vocab=trained.vocab)
        metrics, rows = evaluate(trained.model, dataset, trained.vocab, cfg, dist)
        summary = {**metrics, **metric_options(cfg), "params_m": params_m, "checkpoint": str(trained.source),
                   "weights": trained.weights, "step": trained.step, "testing": cfg["testing"]}
        summaries[split] = summary
        if dist.is_main:
            for row in rows:
                row["errors"] = sample_errors(cfg["task"], row["reference"], row["hypothesis"], **metric_options(cfg))
            _write(out_dir / split, summary, rows)
            pictures += _split_pictures(trained, dataset, out_dir / split, split, rows)
    if dist.is_main:
        _print_table(summaries)
        for name, value in metric_options(cfg).items():
            print(f"{name}: {value}", flush=True)  # e.g. the tokenisation BLEU and ROUGE-L were computed with
        model_dir = Path(cfg["training"]["model_dir"])
        if any((model_dir / "tensorboard").glob("events.out.tfevents.*")):
            pictures.insert(0, plots.learning_curve(model_dir, out_dir / "curve.png"))
        _print_where_to_look(model_dir, out_dir, summaries, pictures)
    return summaries


def _split_pictures(trained: Trained, dataset: Any, split_dir: Path, split: str, rows: list[dict[str, Any]]
                    ) -> list[Path]:
    """The CTC alignment of the split's first sample, or a word classifier's most confused pairs."""
    if trained.cfg["task"] in plots.CTC_POSTERIORS and rows:
        return [plots.alignment(trained, split, rows[0]["name"], split_dir / "alignment.png", dataset)]
    if trained.cfg["task"] == "lip_word":
        return [plots.confusion(rows, split_dir / "confusion.png", source=str(split_dir / "results.jsonl"))]
    return []


def _print_where_to_look(model_dir: Path, out_dir: Path, summaries: dict[str, dict], pictures: list[Path]) -> None:
    lines = [f"  {out_dir / split}/summary.json and results.jsonl (one sample a line)" for split in summaries]
    lines += [f"  picture: {path}" for path in pictures]
    lines += [f"  TensorBoard: tensorboard --logdir {model_dir / 'tensorboard'}"]
    print("look at:\n" + "\n".join(lines), flush=True)


def _write(split_dir: Path, summary: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    summary_text = json.dumps(summary, indent=2, ensure_ascii=False) + "\n"
    results_text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    atomic_write(split_dir / "results.jsonl", lambda f: f.write(results_text.encode()))
    atomic_write(split_dir / "summary.json", lambda f: f.write(summary_text.encode()))
    log.info("wrote %s and %s", split_dir / "summary.json", split_dir / "results.jsonl")


def _print_table(summaries: dict[str, dict]) -> None:
    if not summaries:
        return
    keys = [k for k, v in next(iter(summaries.values())).items() if isinstance(v, (int, float)) and k != "step"]
    lines = ["split  " + " ".join(f"{k:>11}" for k in keys)]
    for split, summary in summaries.items():
        lines.append(f"{split:<6} " + " ".join(f"{summary[k]:>11.3f}" if isinstance(summary[k], float)
                                                else f"{summary[k]:>11}" for k in keys))
    print("\n".join(lines), flush=True)


if __name__ == "__main__":
    run_main(main)
