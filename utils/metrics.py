"""Scores shared by validation and prediction: WER (with deletions, insertions, substitutions) and CER."""
from __future__ import annotations

from typing import Sequence

from dataset.annotations import normalize_gloss


def edit_ops(ref: Sequence, hyp: Sequence) -> tuple[int, int, int]:
    """(substitutions, deletions, insertions) of a minimum-edit alignment of `hyp` to `ref`.

    Plain Python ints: no overflow on long sequences (a uint8 table wraps at 255).
    Ties prefer substitutions, then deletions, as sclite does.
    """
    # Each cell holds (cost, subs, dels, ins).
    prev = [(j, 0, 0, j) for j in range(len(hyp) + 1)]
    for i in range(1, len(ref) + 1):
        cur = [(i, 0, i, 0)]
        for j in range(1, len(hyp) + 1):
            if ref[i - 1] == hyp[j - 1]:
                cur.append(prev[j - 1])
                continue
            c, s, d, n = prev[j - 1]
            best = (c + 1, s + 1, d, n)
            c, s, d, n = prev[j]
            if c + 1 < best[0]:
                best = (c + 1, s, d + 1, n)
            c, s, d, n = cur[j - 1]
            if c + 1 < best[0]:
                best = (c + 1, s, d, n + 1)
            cur.append(best)
        prev = cur
    _, subs, dels, ins = prev[-1]
    return subs, dels, ins


def error_rates(refs: Sequence[Sequence], hyps: Sequence[Sequence]) -> dict[str, float]:
    """Corpus-level error rate in percent over token sequences, with its parts."""
    if len(refs) != len(hyps):
        raise ValueError(f"{len(refs)} references but {len(hyps)} hypotheses")
    subs = dels = ins = total = 0
    for ref, hyp in zip(refs, hyps):
        s, d, n = edit_ops(ref, hyp)
        subs, dels, ins, total = subs + s, dels + d, ins + n, total + len(ref)
    scale = 100.0 / max(total, 1)
    return {"rate": (subs + dels + ins) * scale, "sub": subs * scale, "del": dels * scale, "ins": ins * scale}


def wer(refs: Sequence[str], hyps: Sequence[str]) -> dict[str, float]:
    """Word error rate (percent) with `del`, `ins`, `sub` parts, over whitespace-separated words."""
    rates = error_rates([r.split() for r in refs], [h.split() for h in hyps])
    return {"wer": rates["rate"], "del": rates["del"], "ins": rates["ins"], "sub": rates["sub"]}


def cer(refs: Sequence[str], hyps: Sequence[str]) -> float:
    """Character error rate (percent), spaces included, as LipNet reports it."""
    return error_rates(list(refs), list(hyps))["rate"]


def score(task: str, refs: Sequence[str], hyps: Sequence[str]) -> dict[str, float]:
    """The metrics a task reports, from decoded references and hypotheses."""
    if task == "lip_sentence":
        return {"cer": cer(refs, hyps), **wer(refs, hyps)}
    if task == "S2G":  # the cleanup that made the references, applied to the hypotheses too
        return wer([normalize_gloss(r) for r in refs], [normalize_gloss(h) for h in hyps])
    raise ValueError(f"no metrics for task {task!r}")
