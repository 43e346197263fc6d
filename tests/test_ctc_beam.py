"""CTC prefix beam search against exhaustive search over all frame paths and an unpruned beam search."""
from __future__ import annotations

import itertools
import math
from functools import lru_cache

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from utils.ctc import BATCHED_FROM, beam_search, decode, greedy_decode

A, B = 1, 2  # labels; 0 is blank


def collapse(path: tuple[int, ...], blank: int = 0) -> tuple[int, ...]:
    out, prev = [], blank
    for token in path:
        if token != blank and token != prev:
            out.append(token)
        prev = token
    return tuple(out)


@lru_cache(maxsize=None)
def all_paths(frames: int, labels: int) -> tuple[np.ndarray, np.ndarray, list[tuple[int, ...]]]:
    """Every frame path (V^T x T), the index of the labeling each collapses to, and the labelings."""
    paths = np.array(list(itertools.product(range(labels), repeat=frames)), dtype=np.int64).reshape(-1, frames)
    labelings: dict[tuple[int, ...], int] = {}
    ids = np.array([labelings.setdefault(collapse(tuple(p)), len(labelings)) for p in paths.tolist()])
    return paths, ids, list(labelings)


def exact_log_probs(log_probs: torch.Tensor) -> dict[tuple[int, ...], float]:
    """log P(labeling) for every labeling of a T x V input: log-sum over the paths that collapse to it."""
    lp = log_probs.double().numpy()
    frames, labels = lp.shape
    paths, ids, labelings = all_paths(frames, labels)
    path_lp = lp[np.arange(frames), paths].sum(axis=1)
    top = path_lp.max()
    with np.errstate(divide="ignore"):
        totals = np.log(np.bincount(ids, weights=np.exp(path_lp - top), minlength=len(labelings))) + top
    return dict(zip(labelings, totals.tolist()))


def log_softmax(logits: np.ndarray) -> torch.Tensor:
    """In numpy: torch's op costs milliseconds per tiny call when the CPU is busy."""
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return torch.tensor(shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True)), dtype=torch.float32)


def random_log_probs(rng: np.random.Generator, frames: int, labels: int, scale: float) -> torch.Tensor:
    return log_softmax(rng.normal(size=(frames, labels)) * scale)


def peaky_log_probs(rng: np.random.Generator, frames: int, labels: int) -> torch.Tensor:
    """Like a trained model's output: each frame is confident in one token, most often blank."""
    logits = rng.normal(size=(frames, labels))
    best = np.where(rng.random(frames) < 0.5, 0, rng.integers(1, labels, size=frames))
    logits[np.arange(frames), best] += rng.uniform(3, 8, size=frames)
    return log_softmax(logits)


def beam_one(log_probs: torch.Tensor, beam_size: int) -> tuple[int, ...]:
    return tuple(beam_search(log_probs[None], torch.tensor([len(log_probs)]), beam_size)[0])


def unpruned_beam_search(log_probs: torch.Tensor, beam_size: int, blank: int = 0) -> tuple[int, ...]:
    """Textbook prefix beam search: every label extends every beam at every frame."""
    lp = log_probs.double().tolist()
    beams = {(): (0.0, -math.inf)}
    for row in lp:
        new: dict[tuple[int, ...], list[float]] = {}

        def add(prefix: tuple[int, ...], slot: int, score: float) -> None:
            entry = new.setdefault(prefix, [-math.inf, -math.inf])
            entry[slot] = np.logaddexp(entry[slot], score)

        for prefix, (pb, pnb) in beams.items():
            total = np.logaddexp(pb, pnb)
            add(prefix, 0, total + row[blank])
            if prefix:
                add(prefix, 1, pnb + row[prefix[-1]])
            for c in range(len(row)):
                if c != blank:
                    add(prefix + (c,), 1, (pb if prefix and c == prefix[-1] else total) + row[c])
        ranked = sorted(new.items(), key=lambda item: np.logaddexp(*item[1]), reverse=True)[:beam_size]
        beams = dict((prefix, tuple(scores)) for prefix, scores in ranked)
    return max(beams, key=lambda prefix: np.logaddexp(*beams[prefix]))


def test_big_beam_finds_the_most_probable_labeling():
    for seed in range(1000):
        rng = np.random.default_rng(seed)
        frames, labels = int(rng.integers(1, 7)), int(rng.integers(2, 5))
        log_probs = random_log_probs(rng, frames, labels, scale=float(rng.choice([0.3, 1.0, 3.0])))
        probs = exact_log_probs(log_probs)
        got = beam_one(log_probs, beam_size=labels**frames)  # at least the number of prefixes
        assert probs[got] == pytest.approx(max(probs.values()), abs=1e-9), seed


def test_small_beam_beats_the_greedy_labeling_on_peaky_inputs():
    # Not a guarantee of beam search in general (a beam of 2 can drop the greedy labeling's prefix on flat
    # posteriors), but it holds where the beam matters in practice.
    for seed in range(300):
        rng = np.random.default_rng(seed)
        log_probs = peaky_log_probs(rng, 6, 4)
        probs = exact_log_probs(log_probs)
        greedy = tuple(greedy_decode(log_probs[None], torch.tensor([6]))[0])
        for beam_size in (2, 3):
            assert probs[beam_one(log_probs, beam_size)] >= probs[greedy] - 1e-9, (seed, beam_size)


@pytest.mark.parametrize("beam_size", [2, 3, 5])
def test_pruning_keeps_the_beams_of_an_unpruned_search(beam_size):
    # Longer inputs and more labels than the beam, so the beam is full and most labels are pruned.
    for seed in range(40):
        rng = np.random.default_rng(seed)
        log_probs = random_log_probs(rng, 25, 9, scale=float(rng.choice([1.0, 3.0, 6.0])))
        assert beam_one(log_probs, beam_size) == unpruned_beam_search(log_probs, beam_size), seed


def frames_of(path: list[int], labels: int = 3, confidence: float = 0.9) -> torch.Tensor:
    """T x V log-probs whose best path is `path`."""
    probs = torch.full((len(path), labels), (1 - confidence) / (labels - 1))
    probs[torch.arange(len(path)), torch.tensor(path)] = confidence
    return probs.log()


def test_blank_handling():
    assert beam_one(frames_of([A, 0, A]), 5) == (A, A)
    assert beam_one(frames_of([A, A]), 5) == (A,)
    assert beam_one(frames_of([0, 0, 0]), 5) == ()
    assert beam_one(frames_of([0, A, A, 0, B, 0, B, B]), 5) == (A, B, B)


def test_blank_can_be_any_label():
    rng = np.random.default_rng(2)
    batch = torch.stack([random_log_probs(rng, 15, 6, scale=3.0) for _ in range(5)])
    lengths = torch.full((5,), 15)
    moved = batch[..., [1, 2, 3, 4, 5, 0]]  # blank is now the last label, label i is i - 1
    expected = [[token - 1 for token in seq] for seq in beam_search(batch, lengths, 3)]
    assert beam_search(moved, lengths, 3, blank=5) == expected


def test_lengths_ignore_the_tail_and_batches_equal_single_calls():
    tail = frames_of([A, 0, B, B, A, A])
    assert beam_search(tail[None], torch.tensor([3]), 4) == [[A, B]]
    rng = np.random.default_rng(0)
    batch = torch.stack([random_log_probs(rng, 12, 5, scale=3.0) for _ in range(4)])
    lengths = torch.tensor([12, 7, 1, 0])
    expected = [beam_search(batch[i : i + 1, :n], torch.tensor([n]), 3)[0] for i, n in enumerate(lengths.tolist())]
    assert beam_search(batch, lengths, 3) == expected
    assert expected[3] == []


def test_decode_is_greedy_for_beam_one():
    rng = np.random.default_rng(1)
    batch = torch.stack([random_log_probs(rng, 10, 5, scale=2.0) for _ in range(3)])
    lengths = torch.tensor([10, 6, 3])
    assert decode(batch, lengths, 1) == greedy_decode(batch, lengths)
    assert decode(batch, lengths, 4) == beam_search(batch, lengths, 4)
    with pytest.raises(ValueError):
        beam_search(batch, lengths, 0)


@settings(max_examples=300, deadline=None)
@given(
    st.integers(1, 5).flatmap(
        lambda frames: st.integers(2, 3).flatmap(
            lambda labels: st.lists(
                st.lists(st.floats(-12, 12), min_size=labels, max_size=labels), min_size=frames, max_size=frames
            )
        )
    )
)
def test_big_beam_is_exhaustive(logits):
    log_probs = log_softmax(np.array(logits))
    probs = exact_log_probs(log_probs)
    frames, labels = log_probs.shape
    got = beam_one(log_probs, beam_size=labels**frames)
    assert abs(probs[got] - max(probs.values())) <= 1e-6


def test_batched_search_finds_the_beams_of_single_calls_and_the_most_probable_labeling():
    # BATCHED_FROM samples or more run the whole-batch numpy search: same beams as one sample at a time.
    rng = np.random.default_rng(5)
    count = BATCHED_FROM
    mixed = [peaky_log_probs(rng, 25, 9) if i % 2 else random_log_probs(rng, 25, 9, scale=float(rng.choice([1.0, 6.0])))
             for i in range(count)]
    lengths = torch.tensor(rng.integers(0, 26, size=count))
    for beam_size in (2, 5):
        singles = [beam_search(lp[None, :n], torch.tensor([n]), beam_size)[0] for lp, n in zip(mixed, lengths.tolist())]
        assert beam_search(torch.stack(mixed), lengths, beam_size) == singles
    full_length = beam_search(torch.stack(mixed), torch.full((count,), 25), 3)
    assert [tuple(seq) for seq in full_length[:20]] == [unpruned_beam_search(lp, 3) for lp in mixed[:20]]
    small = torch.stack([random_log_probs(rng, 5, 3, scale=float(rng.choice([0.3, 3.0]))) for _ in range(count)])
    for log_probs, got in zip(small, beam_search(small, torch.full((count,), 5), beam_size=3**5)):
        probs = exact_log_probs(log_probs)
        assert probs[tuple(got)] == pytest.approx(max(probs.values()), abs=1e-9)
