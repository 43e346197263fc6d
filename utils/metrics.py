"""Scores shared by validation and prediction: WER (with deletions, insertions, substitutions), CER, for
translation BLEU-1..4 (sacrebleu) and ROUGE-L F (rouge-score), and for word classification top-1, top-5 and
per-word accuracy."""
from __future__ import annotations

from typing import Any, Callable, Sequence

from rouge_score.rouge_scorer import RougeScorer
from sacrebleu.metrics import BLEU

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


def _check_paired(refs: Sequence, hyps: Sequence) -> None:
    if len(refs) != len(hyps):
        raise ValueError(f"{len(refs)} references but {len(hyps)} hypotheses")


def error_rates(refs: Sequence[Sequence], hyps: Sequence[Sequence]) -> dict[str, float]:
    """Corpus-level error rate in percent over token sequences, with its parts."""
    _check_paired(refs, hyps)
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


class _SacreTokenizer:
    """rouge-score's tokenizer interface over a sacrebleu tokenisation. rouge-score's default tokenizer keeps
    only [a-z0-9]: it drops every Chinese character and splits German words at their umlauts."""

    def __init__(self, tokenize: str) -> None:
        self._tokenize = BLEU(tokenize=tokenize).tokenizer

    def tokenize(self, text: str) -> list[str]:
        return self._tokenize(text).split()


def bleu(refs: Sequence[str], hyps: Sequence[str], tokenize: str) -> dict[str, float]:
    """Corpus BLEU-1..4 (cumulative, with brevity penalty, sacrebleu's default smoothing), in percent."""
    _check_paired(refs, hyps)
    # force: the tokenisation is the config's choice; without it sacrebleu warns about tokenized periods
    return {f"bleu{n}": BLEU(tokenize=tokenize, max_ngram_order=n, force=True).corpus_score(list(hyps), [list(refs)]).score
            for n in range(1, 5)}


def rouge_l(refs: Sequence[str], hyps: Sequence[str], tokenize: str) -> float:
    """ROUGE-L F1 averaged over sentences, in percent, on the same tokens as BLEU."""
    _check_paired(refs, hyps)
    scorer = RougeScorer(["rougeL"], tokenizer=_SacreTokenizer(tokenize))
    scores = [scorer.score(ref, hyp)["rougeL"].fmeasure for ref, hyp in zip(refs, hyps)]
    return 100.0 * sum(scores) / max(len(scores), 1)


def word_accuracy(refs: Sequence[str], ranked: Sequence[str]) -> dict[str, float | dict[str, float]]:
    """Top-1 and top-5 accuracy in percent of ranked hypotheses ('best second ...'), and `per_word`: the
    top-1 accuracy of each reference word's samples."""
    _check_paired(refs, ranked)
    guesses = [hyp.split() for hyp in ranked]
    hits: dict[str, list[bool]] = {}
    for ref, guess in zip(refs, guesses):
        hits.setdefault(ref, []).append(guess[:1] == [ref])
    scale = 100.0 / max(len(refs), 1)
    return {
        "top1": scale * sum(g[:1] == [r] for r, g in zip(refs, guesses)),
        "top5": scale * sum(r in g[:5] for r, g in zip(refs, guesses)),
        "per_word": {word: 100.0 * sum(h) / len(h) for word, h in sorted(hits.items())},
    }


def score(task: str, refs: Sequence[str], hyps: Sequence[str], metric_tokenize: str = "13a") -> dict[str, Any]:
    """The metrics a task reports, from decoded references and hypotheses (`metric_tokenize`: translation only)."""
    if task in ("G2T", "S2T"):
        return {**bleu(refs, hyps, metric_tokenize), "rouge_l": rouge_l(refs, hyps, metric_tokenize)}
    if task == "lip_word":
        return word_accuracy(refs, hyps)
    if task == "lip_sentence":
        return {"cer": cer(refs, hyps), **wer(refs, hyps)}
    if task == "S2G":  # the cleanup that made the references, applied to the hypotheses too
        return wer([normalize_gloss(r) for r in refs], [normalize_gloss(h) for h in hyps])
    raise ValueError(f"no metrics for task {task!r}")


def word_edits(ref: str, hyp: str) -> dict[str, int]:
    """One sample's word-level edit operations against its reference, and the reference's word count."""
    subs, dels, ins = edit_ops(ref.split(), hyp.split())
    return {"sub": subs, "del": dels, "ins": ins, "ref_words": len(ref.split())}


def _translation_edits(ref: str, hyp: str, tokenize: str) -> dict[str, Any]:
    return word_edits(*(" ".join(_SacreTokenizer(tokenize).tokenize(t)) for t in (ref, hyp)))


# Per task: (reference, hypothesis, metric_tokenize) -> what went wrong in one sample, for results.jsonl.
SAMPLE_ERRORS: dict[str, Callable[[str, str, str], dict[str, Any]]] = {
    "S2G": lambda ref, hyp, _: word_edits(normalize_gloss(ref), normalize_gloss(hyp)),
    "lip_sentence": lambda ref, hyp, _: {**word_edits(ref, hyp), "char_edits": sum(edit_ops(ref, hyp)),
                                         "ref_chars": len(ref)},
    "G2T": _translation_edits,
    "S2T": _translation_edits,
    # a lip_word hypothesis lists the five best words, best first
    "lip_word": lambda ref, hyp, _: {"correct": hyp.split()[:1] == [ref], "in_top5": ref in hyp.split()},
}


def sample_errors(task: str, ref: str, hyp: str, metric_tokenize: str = "13a") -> dict[str, Any]:
    return SAMPLE_ERRORS[task](ref, hyp, metric_tokenize)
