"""Pictures of a run, as PNG files:

    python -m utils.plots curve --run MODEL_DIR                       learning curves from TensorBoard logs
    python -m utils.plots alignment --ckpt FILE --sample NAME         CTC posteriors of one sample, with the path
    python -m utils.plots confusion --results .../results.jsonl       the most confused reference/hypothesis pairs

Figures are drawn with matplotlib's object API (no pyplot, no display needed).
"""
from __future__ import annotations

import argparse
import json
import logging
import re
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import yaml
from matplotlib.figure import Figure

from utils.cli import run_main
from utils.config import LOWER_IS_BETTER
from utils.errors import UserError

DPI = 100


def _save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    return path


# ------------------------------------------------------------------------------------------ learning curve

def read_scalars(log_dir: Path) -> dict[str, tuple[list[int], list[float]]]:
    """Every scalar of a TensorBoard log folder as {tag: (steps, values)}; events a resumed run purged are dropped."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logging.getLogger("tensorboard").setLevel(logging.WARNING)  # not "No path found after <file>" on every read

    if not any(log_dir.glob("events.out.tfevents.*")):
        raise UserError(f"{log_dir} holds no TensorBoard event files (events.out.tfevents.*); "
                        "training writes them to training.model_dir/tensorboard")
    accumulator = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})  # 0: keep every point
    accumulator.Reload()
    return {tag: ([e.step for e in events], [e.value for e in events])
            for tag in accumulator.Tags()["scalars"] if (events := accumulator.Scalars(tag))}


def learning_curve(run_dir: str | Path, out_path: str | Path | None = None) -> Path:
    """Training (and dev) loss, and the dev metric that picks the best checkpoint, against the step."""
    run_dir = Path(run_dir)
    scalars = read_scalars(run_dir / "tensorboard")
    metric = _validation_metric(run_dir, scalars)
    fig = Figure(figsize=(11, 4), layout="constrained")
    loss_ax, metric_ax = fig.subplots(1, 2)
    for tag, label in (("train/loss", "train"), ("dev/loss", "dev")):
        if tag in scalars:
            steps, values = scalars[tag]
            loss_ax.plot(steps, values, marker="o" if label == "dev" else None, label=label)
    losses = [v for tag in ("train/loss", "dev/loss") if tag in scalars for v in scalars[tag][1]]
    if losses and min(losses) > 0 and max(losses) / min(losses) > 10:  # CTC losses fall by decades
        loss_ax.set_yscale("log")
    loss_ax.set(title="loss", xlabel="step", ylabel="loss")
    loss_ax.legend()
    if metric is not None:
        steps, values = scalars[f"dev/{metric}"]
        metric_ax.plot(steps, values, marker="o", color="tab:green")
        best = int(np.argmin(values) if metric in LOWER_IS_BETTER else np.argmax(values))
        metric_ax.plot(steps[best], values[best], "*", color="tab:red", markersize=14, label="best")
        metric_ax.set(title=f"dev {metric}: best {values[best]:.2f} at step {steps[best]}", xlabel="step", ylabel=metric)
    else:
        metric_ax.set_axis_off()
    for ax in (loss_ax, metric_ax):
        ax.grid(alpha=0.3)
    fig.suptitle(run_dir.name)
    return _save(fig, Path(out_path) if out_path else run_dir / "plots" / "curve.png")


def _validation_metric(run_dir: Path, scalars: dict[str, Any]) -> str | None:
    """The run's `training.validation.metric` (from its config.yaml), else the first dev scalar logged."""
    config = run_dir / "config.yaml"
    if config.is_file():
        metric = yaml.safe_load(config.read_text())["training"]["validation"]["metric"]
        if f"dev/{metric}" in scalars:
            return metric
    return next((tag.split("/", 1)[1] for tag in scalars if tag.startswith("dev/") and tag != "dev/loss"), None)


# ------------------------------------------------------------------------------------------ CTC alignment

# Per CTC task: (model outputs, batch) -> (B x T x V log-probabilities, valid frames per sample).
CTC_POSTERIORS: dict[str, Callable[[dict[str, Any], dict[str, Any]], tuple[torch.Tensor, torch.Tensor]]] = {
    "lip_sentence": lambda outputs, batch: (outputs["log_probs"], batch["video_lengths"]),
    "S2G": lambda outputs, batch: (outputs["gloss_log_probabilities"], outputs["output_lengths"]),
}


@torch.no_grad()
def alignment(trained: Any, split: str, name: str, out_path: str | Path | None = None,
              dataset: Any = None) -> Path:
    """Frame-wise posteriors of one sample (`trained`: utils.inference.Trained) of a CTC model, as a heatmap of
    the blank and the tokens of the reference, the decoding and the best path, with the best path marked.
    `dataset`: the split's dataset when the caller has already built it."""
    from dataset import build_dataset
    from dataset.loader import collate
    from utils.evaluation import move_to

    cfg, model, vocab = trained.cfg, trained.model, trained.vocab
    if cfg["task"] not in CTC_POSTERIORS:
        raise UserError(f"alignment: a {cfg['task']} model has no CTC posteriors; CTC tasks: {', '.join(CTC_POSTERIORS)}")
    dataset = dataset if dataset is not None else build_dataset(cfg, split, vocab=vocab)
    names = [dataset.name(i) for i in range(len(dataset))]
    if name not in names:
        raise UserError(f"alignment: no sample {name!r} in the {split} split ({cfg['data'][split]}); "
                        f"its first samples: {', '.join(names[:3])}")
    batch = move_to(collate([dataset[names.index(name)]]), next(model.parameters()).device)
    outputs = model(batch)
    log_probs, lengths = CTC_POSTERIORS[cfg["task"]](outputs, batch)
    probs = log_probs[0, : int(lengths[0])].float().exp().cpu().numpy()  # T x V
    decoded = vocab.decode(model.decode(outputs, batch)[0])
    reference = batch["text"][0]
    rows = _shown_tokens(probs, vocab, reference, decoded)
    fig = Figure(figsize=(min(24, max(8, 0.12 * len(probs) + 2)), 1.6 + 0.28 * len(rows)), layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(probs[:, rows].T, aspect="auto", cmap="Blues", vmin=0, vmax=1, interpolation="nearest")
    best = probs.argmax(axis=1)
    frames = [t for t in range(len(best)) if best[t] in rows]
    ax.plot(frames, [rows.index(best[t]) for t in frames], "o", color="tab:red", markersize=3)
    ax.set_yticks(range(len(rows)), [_token_label(vocab.tokens[r]) for r in rows])
    ax.set(xlabel="output frame (red: the most probable token of each frame, the best path)", ylabel="token")
    fig.colorbar(image, ax=ax, label="posterior", pad=0.01)
    ax.set_title(f"{name}\nreference: {reference}\ndecoded:   {decoded}", loc="left", fontsize="medium",
                 family="monospace")
    default = Path(cfg["training"]["model_dir"]) / "plots" / f"alignment_{re.sub(r'[^A-Za-z0-9_.-]', '_', name)}.png"
    return _save(fig, Path(out_path) if out_path else default)


def _shown_tokens(probs: np.ndarray, vocab: Any, reference: str, decoded: str) -> list[int]:
    """The blank, then the tokens of the best path, the decoding and the reference, ordered by the frame where
    each first wins (tokens that never win follow, in reference order): a monotonic alignment is a diagonal."""
    best = probs.argmax(axis=1).tolist()
    units = [u for text in (reference, decoded) for u in (text.split() if vocab.joiner == " " else list(text))]
    index = {t: i for i, t in enumerate(vocab.tokens)}
    candidates = set(best) | {index[u] for u in units if u in index}
    candidates.discard(vocab.blank)
    first_win = {t: best.index(t) if t in best else len(best) for t in candidates}
    order = {index[u]: i for i, u in reversed(list(enumerate(units))) if u in index}
    return [vocab.blank] + sorted(candidates, key=lambda t: (first_win[t], order.get(t, len(units))))


def _token_label(token: str) -> str:
    return {" ": "space", "<blank>": "blank"}.get(token, token)


# ------------------------------------------------------------------------------------------ confusions

def confused_pairs(rows: Sequence[dict[str, Any]], top: int = 20) -> list[tuple[tuple[str, str], int]]:
    """The most frequent (reference, best word) pairs among the wrong rows of a classification task (a row's
    hypothesis lists the best words first, as lip_word's top-5 rows do)."""
    counts = Counter((r["reference"], best) for r in rows if (best := _best(r)) != r["reference"])
    return counts.most_common(top)


def _best(row: dict[str, Any]) -> str:
    return row["hypothesis"].split(" ", 1)[0]


def confusion(rows: Sequence[dict[str, Any]], out_path: str | Path, top: int = 20, source: str = "") -> Path:
    """A bar chart of the `top` most confused pairs of classification rows (results.jsonl lines), each bar
    marked with its share of the reference's samples; `source` (e.g. the results file) heads the title."""
    pairs = confused_pairs(rows, top)
    wrong = sum(r["reference"] != _best(r) for r in rows)
    per_reference = Counter(r["reference"] for r in rows)
    fig = Figure(figsize=(8, 1.5 + 0.3 * max(len(pairs), 1)), layout="constrained")
    ax = fig.subplots()
    if pairs:
        labels = [f"{ref} → {hyp}" for (ref, hyp), _ in pairs]
        bars = ax.barh(range(len(pairs)), [n for _, n in pairs], color="tab:orange")
        ax.bar_label(bars, [f"{n} of {per_reference[ref]} {ref}" for (ref, _), n in pairs], padding=3)
        ax.set_yticks(range(len(pairs)), labels)
        ax.invert_yaxis()  # the most confused on top
        ax.set_xlabel("samples (reference → best word)")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.set_xlim(right=1.25 * pairs[0][1])  # room for the labels
    else:
        ax.set_axis_off()
        ax.text(0.5, 0.5, "no confusions: every sample's best word is its reference", ha="center", va="center")
    heading = f"{source}\n" if source else ""
    ax.set_title(f"{heading}most confused pairs: {wrong} of {len(rows)} samples wrong", fontsize="medium")
    return _save(fig, Path(out_path))


def read_results(path: str | Path) -> list[dict[str, Any]]:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"results file {path} does not exist (prediction.py writes <model_dir>/prediction/<split>/results.jsonl)")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# ------------------------------------------------------------------------------------------ command line

def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Pictures of a run, as PNG files")
    commands = parser.add_subparsers(dest="command", required=True)
    curve = commands.add_parser("curve", help="loss and dev metric against the step, from TensorBoard logs")
    curve.add_argument("--run", required=True, help="the run's training.model_dir")
    align = commands.add_parser("alignment", help="CTC posteriors of one sample with the best path")
    align.add_argument("--ckpt", required=True, help="checkpoint file or exported folder")
    align.add_argument("--config", help="experiment YAML file (default: the config stored in the checkpoint)")
    align.add_argument("--opts", nargs="*", default=[], metavar="KEY=VALUE")
    align.add_argument("--sample", required=True, help="sample name, as in results.jsonl")
    align.add_argument("--split", default="dev")
    confused = commands.add_parser("confusion", help="most confused pairs of a classification results.jsonl")
    confused.add_argument("--results", required=True)
    confused.add_argument("--top", type=int, default=20)
    for sub in (curve, align, confused):
        sub.add_argument("--output", help="PNG file to write")
    args = parser.parse_args(argv)
    if args.command == "curve":
        path = learning_curve(args.run, args.output)
    elif args.command == "alignment":
        from utils.config import load_config
        from utils.inference import load_trained

        cfg = load_config(args.config, args.opts) if args.config else None
        path = alignment(load_trained(args.ckpt, cfg, args.opts), args.split, args.sample, args.output)
    else:
        output = args.output or Path(args.results).with_name("confusion.png")
        path = confusion(read_results(args.results), output, args.top, source=args.results)
    print(f"wrote {path}", flush=True)


if __name__ == "__main__":
    run_main(main)
