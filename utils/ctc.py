"""CTC decoding, shared by every CTC model and by prediction."""
from __future__ import annotations

import heapq
import math

import numpy as np
import torch


def greedy_decode(log_probs: torch.Tensor, lengths: torch.Tensor, blank: int = 0) -> list[list[int]]:
    """Best path per sample: argmax per frame, merge repeats, drop blanks.

    `log_probs` is B x T x V; only the first `lengths[b]` frames of sample b count. Repeats are merged
    only when no blank separates them: `a - a` decodes to `a a`.
    """
    best = log_probs.argmax(dim=-1).cpu()
    out = []
    for path, length in zip(best.tolist(), lengths.tolist()):
        tokens, prev = [], blank
        for token in path[:length]:
            if token != blank and token != prev:
                tokens.append(token)
            prev = token
        out.append(tokens)
    return out


def ctc_loss(
    log_probs: torch.Tensor,
    lengths: torch.Tensor,
    targets: torch.Tensor,
    target_lengths: torch.Tensor,
    blank: int = 0,
) -> torch.Tensor:
    """CTC loss summed over each sample's frames, averaged over samples (B x T x V log-probs).

    Impossible alignments (target longer than the input allows) give 0 instead of inf.
    """
    per_sample = torch.nn.functional.ctc_loss(
        log_probs.transpose(0, 1).float(),
        targets,
        lengths,
        target_lengths,
        blank=blank,
        reduction="none",
        zero_infinity=True,
    )
    return per_sample.mean()


def infeasible_targets(lengths: torch.Tensor, targets: torch.Tensor, target_lengths: torch.Tensor) -> int:
    """How many samples have fewer frames than CTC needs for their target (its length plus one blank
    between each pair of equal neighbours); `ctc_loss` zeroes their loss, so callers should report them."""
    needed = target_lengths.clone()
    if targets.numel() > 1:
        repeats = (targets[1:] == targets[:-1]).long()
        ends = target_lengths.cumsum(0)[:-1] - 1  # a pair across two samples' targets is no repeat
        repeats[ends[(ends >= 0) & (ends < len(repeats))]] = 0  # -1 (empty targets first) would wrap around
        sample = torch.repeat_interleave(torch.arange(len(target_lengths), device=targets.device), target_lengths)
        needed = needed.index_add(0, sample[1:], repeats)
    return int((lengths.to(needed.device) < needed).sum())


def _logaddexp(a: float, b: float) -> float:
    """log(exp(a) + exp(b)) on Python floats: `math` is much faster than numpy on scalars."""
    if a < b:
        a, b = b, a
    if b == -math.inf:
        return a
    return a + math.log1p(math.exp(b - a))


def beam_search(log_probs: torch.Tensor, lengths: torch.Tensor, beam_size: int, blank: int = 0) -> list[list[int]]:
    """CTC prefix beam search (Hannun et al. 2014) in log space; the most probable labeling per sample.

    `log_probs` is B x T x V (log_softmax outputs); only the first `lengths[b]` frames of sample b count.
    Each prefix keeps two scores, paths ending in blank and paths ending in its last label, so `a - a`
    extends to `a a` while `a a` stays `a`. Beams are ranked by the total log-probability of the prefix.

    Pruning keeps exactly the beams of trying every label at every frame (up to ties), so a beam larger
    than the number of prefixes is an exhaustive search. A prefix not yet in the beam has a single parent,
    so its score is one term: it is tried only if that term beats the `beam_size`-th best score so far,
    with beams best first and labels restricted to the frame's top `beam_size + 1` non-blank ones (a
    lower label always has `beam_size` better extensions). On peaky posteriors most frames are then just
    a merge of the existing beams.
    """
    if beam_size < 1:
        raise ValueError(f"beam_size must be >= 1, got {beam_size}")
    frames = log_probs.detach().float().cpu().numpy()
    best_label = np.full(frames.shape[:2], -np.inf, dtype=frames.dtype)  # best non-blank log-prob per frame
    for part in (frames[..., :blank], frames[..., blank + 1 :]):
        if part.shape[-1]:
            np.maximum(best_label, part.max(axis=-1), out=best_label)
    return [
        _prefix_beam_search(frames[b, :length], best_label[b, :length].tolist(), beam_size, blank)
        for b, length in enumerate(lengths.tolist())
    ]


def _prefix_beam_search(frames: np.ndarray, best_label: list[float], beam_size: int, blank: int) -> list[int]:
    """One sample: `frames` is T x V log-probs, `best_label` the best non-blank log-prob of each frame.

    Prefixes are nodes of a trie (ints), so no frame hashes or copies label tuples.
    """
    inf = -math.inf
    top = beam_size + 1
    parents, last_labels = [-1], [-1]  # node 0 is the empty prefix
    children: dict[tuple[int, int], int] = {}
    beams = [(0.0, 0, 0.0, inf)]  # (total, node, ends in blank, ends in its last label)
    for row, blank_lp, frame_best in zip(frames, frames[:, blank].tolist(), best_label):
        in_beam = {node: (total, pb) for total, node, pb, _ in beams}
        kept = []  # the current prefixes, with the mass one beam passes to another
        for total, node, pb, pnb in beams:
            new_b = total + blank_lp
            last = last_labels[node]
            if last < 0:
                kept.append((new_b, node, new_b, inf))
                continue
            lp = row.item(last)
            new_nb = pnb + lp
            parent = in_beam.get(parents[node])
            if parent is not None:
                new_nb = _logaddexp(new_nb, (parent[1] if last_labels[parents[node]] == last else parent[0]) + lp)
            kept.append((_logaddexp(new_b, new_nb), node, new_b, new_nb))
        threshold = min(kept)[0] if len(kept) == beam_size else inf  # what a new prefix must beat
        if max(beams)[0] + frame_best > threshold:
            labels = np.argpartition(row, -(top + 1))[-(top + 1) :].tolist() if len(row) > top + 1 else range(len(row))
            candidates = sorted(((row.item(c), c) for c in labels if c != blank), reverse=True)[:top]
            heapq.heapify(kept)
            for total, node, pb, _ in sorted(beams, reverse=True):
                last = last_labels[node]
                for lp, c in candidates:
                    if total + lp <= threshold:
                        break
                    score = (pb if c == last else total) + lp
                    child = children.get((node, c))
                    if score <= threshold or child in in_beam:
                        continue
                    if child is None:
                        child = children[node, c] = len(parents)
                        parents.append(node)
                        last_labels.append(c)
                    if len(kept) < beam_size:
                        heapq.heappush(kept, (score, child, inf, score))
                    else:
                        heapq.heapreplace(kept, (score, child, inf, score))
                    threshold = kept[0][0] if len(kept) == beam_size else inf
        beams = kept
    tokens, node = [], max(beams)[1]
    while node > 0:
        tokens.append(last_labels[node])
        node = parents[node]
    return tokens[::-1]


def decode(log_probs: torch.Tensor, lengths: torch.Tensor, beam_size: int, blank: int = 0) -> list[list[int]]:
    """Greedy decoding for `beam_size == 1`, prefix beam search otherwise."""
    if beam_size == 1:
        return greedy_decode(log_probs, lengths, blank)
    return beam_search(log_probs, lengths, beam_size, blank)
