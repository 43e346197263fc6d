"""Evaluate a trained model on dev and test: `python prediction.py --config FILE [--ckpt FILE]`.

Loads `training.model_dir/ckpts/best.ckpt` (or `--ckpt`, or `--ckpt_name` in that folder; EMA weights
when the run kept them), scores every split with the decoding settings of `testing.cfg`, and writes
`model_dir/<save_subdir>/<split>/summary.json` and `results.jsonl` (one sample a line). Works under
torchrun: each sample is decoded on exactly one rank.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Sequence

from dataset import build_dataset, vocabulary_from_state
from modelling import build_model
from utils.checkpoint import atomic_write, load_checkpoint, load_state_strict
from utils.cli import base_parser, run_main
from utils.config import load_config
from utils.distributed import DistInfo, init_distributed, shutdown
from utils.errors import CheckpointError
from utils.evaluation import evaluate, metric_options
from utils.logging import setup_logging

log = logging.getLogger("prediction")


def main(argv: Sequence[str] | None = None) -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--ckpt", help="checkpoint file (default: model_dir/ckpts/best.ckpt)")
    parser.add_argument("--ckpt_name", help="a file name in model_dir/ckpts/ (SLRT's argument)")
    parser.add_argument("--save_subdir", default="prediction", help="output folder under model_dir")
    parser.add_argument("--splits", nargs="+", default=["dev", "test"])
    args = parser.parse_args(argv)
    cfg = load_config(args.config, args.opts)
    dist = init_distributed()
    try:
        setup_logging(None, dist.is_main)
        ckpt_dir = Path(cfg["training"]["model_dir"]) / "ckpts"
        path = Path(args.ckpt) if args.ckpt else ckpt_dir / (args.ckpt_name or "best.ckpt")
        predict(cfg, path, Path(cfg["training"]["model_dir"]) / args.save_subdir, args.splits, dist)
    finally:
        shutdown()


def predict(cfg: dict[str, Any], ckpt_path: Path, out_dir: Path, splits: Sequence[str], dist: DistInfo) -> dict[str, dict]:
    """Score each split with the checkpoint's weights; returns {split: summary}."""
    payload = load_checkpoint(ckpt_path)
    absent = [key for key in ("model", "vocab") if key not in payload]
    if absent:
        raise CheckpointError(f"checkpoint {ckpt_path} holds no {' or '.join(map(repr, absent))}: "
                              "expected a checkpoint written by training.py (with 'model' and 'vocab')")
    vocab = vocabulary_from_state(cfg, payload["vocab"])
    model = build_model(cfg, vocab)
    weights, which = evaluation_weights(payload)
    load_state_strict(model, weights, f"checkpoint {ckpt_path} ({which} weights)")
    model.to(dist.device)
    params_m = sum(p.numel() for p in model.parameters()) / 1e6  # reported beside accuracy, as papers do
    summaries = {}
    for split in splits:
        if cfg["data"].get(split) is None:
            log.info("%s: no data.%s given, skipped", split, split)
            continue
        metrics, rows = evaluate(model, build_dataset(cfg, split, vocab=vocab), vocab, cfg, dist)
        summary = {**metrics, **metric_options(cfg), "params_m": params_m, "checkpoint": str(ckpt_path),
                   "weights": which, "step": payload.get("state", {}).get("step"), "testing": cfg["testing"]}
        summaries[split] = summary
        if dist.is_main:
            _write(out_dir / split, summary, rows)
    if dist.is_main:
        _print_table(summaries)
        for name, value in metric_options(cfg).items():
            print(f"{name}: {value}", flush=True)  # e.g. the tokenisation BLEU and ROUGE-L were computed with
    return summaries


def evaluation_weights(payload: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """The EMA weights when the run kept an EMA (what it validated with), else the raw weights."""
    ema = payload.get("ema")
    if ema:
        return {k.removeprefix("module."): v for k, v in ema.items() if k.startswith("module.")}, "ema"
    return payload["model"], "model"


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
