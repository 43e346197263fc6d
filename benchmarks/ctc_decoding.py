"""CTC beam search: ours (utils.ctc.beam_search) against pyctcdecode with its default pruning, side by side.

    python benchmarks/ctc_decoding.py --quick                 # under a minute on 2 CPU cores
    python benchmarks/ctc_decoding.py --inputs 1000 --repeats 5

Inputs look like a trained gloss recogniser's posteriors (T=100, V=1100 with blank 0): mostly blank,
a confident gloss every few frames, sometimes a close second gloss or a doubtful frame, so the beam has
choices to make. Both decoders get the same log-probabilities and beam width; pyctcdecode keeps its
defaults (`beam_prune_logp` -10, `token_min_logp` -5, no language model). "ours" decodes all inputs in
one call (the whole-batch numpy search); "ours, batches of 8" calls it as validation does, which runs
the per-sample loop. Each repeat times every way over the same inputs, rotating which goes first;
medians and ratios are printed, with how often the best hypotheses agree. Times are the process's CPU
time (all three run on one core), which a shared machine disturbs far less than wall time.
pyctcdecode is a benchmark-only dependency: `pip install -e '.[bench]'`.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import rotated  # noqa: E402
from utils.ctc import beam_search  # noqa: E402


def peaky_posteriors(count: int, frames: int, vocab: int, seed: int) -> np.ndarray:
    """count x frames x vocab log-probabilities: blank-dominated, a gloss peak every 3-6 frames."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0.0, 1.0, size=(count, frames, vocab)).astype(np.float32)
    logits[..., 0] += 9.0
    for sample in logits:
        t = int(rng.integers(0, 4))
        while t < frames:
            gloss = int(rng.integers(1, vocab))
            sample[t, gloss] += 12.0 + rng.normal(0.0, 1.5)  # at times weaker than the blank
            if rng.random() < 0.3:  # a rival gloss on the same frame
                sample[t, int(rng.integers(1, vocab))] += 11.0 + rng.normal(0.0, 1.5)
            t += int(rng.integers(3, 7))
    return torch.from_numpy(logits).log_softmax(-1).numpy()


def labels_for(vocab: int) -> list[str]:
    """pyctcdecode labels: "" is the blank, one distinct non-space character per gloss, so its text
    output maps back to gloss ids one to one (no space label: the whole output is one 'word')."""
    return [""] + [chr(0x4E00 + i) for i in range(vocab - 1)]


def labeling_log_prob(log_probs: np.ndarray, labels: list[int]) -> float:
    """log P(labels | input) summed over all CTC paths (the quantity beam search approximates the argmax of)."""
    lp = torch.from_numpy(log_probs)[:, None]
    target = torch.tensor([labels], dtype=torch.long)
    return -float(torch.nn.functional.ctc_loss(lp, target, [lp.shape[0]], [len(labels)], reduction="sum"))


def best_per_second(decode: Callable[[], list[list[int]]], count: int) -> tuple[float, list[list[int]]]:
    start = time.process_time()
    result = decode()
    return count / (time.process_time() - start), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--inputs", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--beam", type=int, default=5)
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--vocab", type=int, default=1100)
    args = parser.parse_args()
    try:
        from pyctcdecode import build_ctcdecoder
    except ImportError:
        sys.exit("this benchmark needs pyctcdecode: pip install -e '.[bench]'")
    count, repeats = (200, 3) if args.quick else (args.inputs, args.repeats)
    log_probs = peaky_posteriors(count, args.frames, args.vocab, seed=0)
    labels = labels_for(args.vocab)
    decoder = build_ctcdecoder(labels)
    index = {c: i for i, c in enumerate(labels)}
    lengths = torch.full((count,), args.frames)

    def ours() -> list[list[int]]:
        return beam_search(torch.from_numpy(log_probs), lengths, args.beam)

    def ours_by_8() -> list[list[int]]:
        frames = torch.from_numpy(log_probs)
        return [seq for i in range(0, count, 8) for seq in beam_search(frames[i : i + 8], lengths[i : i + 8], args.beam)]

    def theirs() -> list[list[int]]:
        return [[index[c] for c in decoder.decode(lp, beam_width=args.beam)] for lp in log_probs]

    ways = {"pyctcdecode": theirs, "ours": ours, "ours, batches of 8": ours_by_8}
    rates: dict[str, list[float]] = {name: [] for name in ways}
    outputs: dict[str, list[list[int]]] = {}
    names = list(ways)
    for r in range(repeats):
        for name in rotated(names, r):
            rate, outputs[name] = best_per_second(ways[name], count)
            rates[name].append(rate)
    medians = {name: statistics.median(values) for name, values in rates.items()}
    differ = [i for i, (a, b) in enumerate(zip(outputs["ours"], outputs["pyctcdecode"])) if a != b]
    ours_better = sum(labeling_log_prob(log_probs[i], outputs["ours"][i])
                      > labeling_log_prob(log_probs[i], outputs["pyctcdecode"][i]) for i in differ)
    print(f"{count} inputs, T={args.frames}, V={args.vocab}, beam {args.beam}, {repeats} repeats (median), "
          f"{torch.get_num_threads()} torch threads, load average {os.getloadavg()[0]:.1f}:")
    for name, value in medians.items():
        print(f"  {name:<18} {value:8.1f} utterances/s (CPU time)  {value / medians['pyctcdecode']:5.2f}x pyctcdecode")
    if outputs["ours"] != outputs["ours, batches of 8"]:
        print("  WARNING: the whole-batch search and the per-sample loop disagree")
    print(f"  same best hypothesis on {count - len(differ)} of {count} inputs; where they differ, ours is the "
          f"more probable labeling in {ours_better} of {len(differ)}")


if __name__ == "__main__":
    main()
