"""CTC decoding, shared by every CTC model and by prediction."""
from __future__ import annotations

import heapq
import math

import numpy as np
import torch

BATCHED_FROM = 128  # samples: below, the per-sample loop is faster (benchmarks/README.md)


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


class _Trie:
    """Prefixes as nodes (ints), node 0 the empty prefix, so no frame hashes or copies label tuples."""

    def __init__(self, vocab: int) -> None:
        self.vocab, self.parents, self.labels = vocab, [-1], [-1]
        self.children: dict[int, int] = {}  # parent * vocab + label -> node

    def child(self, node: int, label: int) -> int:
        key = node * self.vocab + label
        child = self.children.get(key)
        if child is None:
            child = self.children[key] = len(self.parents)
            self.parents.append(node)
            self.labels.append(label)
        return child

    def extend(self, parents: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """The nodes of `parents` each extended by its label, made where new."""
        keys = parents * self.vocab + labels
        get = self.children.get
        nodes = np.array([get(key, -1) for key in keys.tolist()], dtype=np.int64)
        missing = nodes < 0
        if missing.any():
            unique, first, inverse = np.unique(keys[missing], return_index=True, return_inverse=True)
            made = np.arange(len(self.parents), len(self.parents) + len(unique))
            self.children.update(zip(unique.tolist(), made.tolist()))
            self.parents.extend(parents[missing][first].tolist())
            self.labels.extend(labels[missing][first].tolist())
            nodes[missing] = made[inverse]
        return nodes

    def tokens(self, node: int) -> list[int]:
        tokens = []
        while node > 0:
            tokens.append(self.labels[node])
            node = self.parents[node]
        return tokens[::-1]


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

    From `BATCHED_FROM` samples on, the search runs on the whole batch at once in numpy (`_BatchSearch`,
    the same beams); below, a Python loop per sample is faster (numpy's per-call cost dominates).
    """
    if beam_size < 1:
        raise ValueError(f"beam_size must be >= 1, got {beam_size}")
    frames = log_probs.detach().float().cpu().numpy()
    best_label = np.full(frames.shape[:2], -np.inf, dtype=frames.dtype)  # best non-blank log-prob per frame
    for part in (frames[..., :blank], frames[..., blank + 1 :]):
        if part.shape[-1]:
            np.maximum(best_label, part.max(axis=-1), out=best_label)
    if len(lengths) >= BATCHED_FROM:
        return _BatchSearch(frames, lengths.cpu().numpy(), beam_size, blank).run(best_label)
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
    trie = _Trie(frames.shape[-1])
    parents, last_labels, children, vocab = trie.parents, trie.labels, trie.children, trie.vocab
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
                    if score <= threshold or children.get(node * vocab + c) in in_beam:
                        continue
                    child = trie.child(node, c)
                    if len(kept) < beam_size:
                        heapq.heappush(kept, (score, child, inf, score))
                    else:
                        heapq.heapreplace(kept, (score, child, inf, score))
                    threshold = kept[0][0] if len(kept) == beam_size else inf
        beams = kept
    return trie.tokens(max(beams)[1])


class _BatchSearch:
    """Every sample's beams as padded B x beam_size arrays, longest sample first (the samples still running
    are a prefix of the rows); an unused slot has node -1 and score -inf, and used slots come first. A
    frame is a few numpy operations over the whole batch: no Python loop over samples, beams or labels."""

    def __init__(self, frames: np.ndarray, lengths: np.ndarray, beam_size: int, blank: int) -> None:
        batch = len(lengths)
        self.frames, self.k, self.blank = frames, beam_size, blank
        self.order = np.argsort(-lengths, kind="stable")
        self.lengths = lengths[self.order]
        self.trie = _Trie(frames.shape[-1])
        self.width = beam_size + 1  # column beam_size of scores stays -inf: parents outside the beam point at it
        self.plane = batch * self.width
        self.empty_cell = np.arange(batch) * self.width + beam_size
        self.scores = np.full((2, batch, self.width), -np.inf)  # [0] total, [1] paths ending in blank
        self.scores[:, :, 0] = 0.0
        self.in_label = np.full((batch, beam_size), -np.inf)  # paths ending in the prefix's last label
        self.nodes = np.full((batch, beam_size), -1)
        self.nodes[:, 0] = 0
        self.parent_node = np.full((batch, beam_size), -1)
        self.label = np.full((batch, beam_size), blank)  # the last label; blank for none (in_label is -inf there)
        self.parent_at = np.repeat(self.empty_cell[:, None], beam_size, axis=1)  # flat index into scores

    def run(self, best_label: np.ndarray) -> list[list[int]]:
        for t in range(int(self.lengths.max(initial=0))):
            active = int(np.count_nonzero(self.lengths > t))
            self.step(t, active, best_label[self.order[:active], t])
        out: list[list[int]] = [[] for _ in self.order]
        for b, totals, nodes in zip(self.order.tolist(), self.scores[0, :, : self.k].tolist(), self.nodes.tolist()):
            out[b] = self.trie.tokens(max((s, n) for s, n in zip(totals, nodes) if n >= 0)[1])
        return out

    def step(self, t: int, active: int, frame_best: np.ndarray) -> None:
        """One frame for the first `active` samples: merge every beam, then admit new prefixes where one can enter."""
        rows, k = self.order[:active], self.k
        total, in_blank = self.scores[0, :active, :k], self.scores[1, :active, :k]
        lp = self.frames[rows[:, None], t, self.label[:active]]
        parent = self.scores.reshape(-1).take(self.parent_at[:active])  # its total, or ends-in-blank for a repeat
        new_blank = total + self.frames[rows, t, self.blank][:, None]
        new_label = np.logaddexp(self.in_label[:active] + lp, parent + lp)
        new_total = np.logaddexp(new_blank, new_label)
        threshold = np.where(self.nodes[:active, -1] >= 0, new_total.min(axis=1), -np.inf)  # what a new prefix must beat
        best_old = total.max(axis=1)
        expand = np.flatnonzero(best_old + frame_best > threshold)
        old = total[expand], in_blank[expand]
        total[:], in_blank[:], self.in_label[:active] = new_total, new_blank, new_label
        if expand.size:
            merged = new_total[expand], new_blank[expand], new_label[expand]
            self.admit(t, expand, old, merged, best_old[expand], threshold[expand])

    def candidates(self, rows: np.ndarray, best_old: np.ndarray, threshold: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """m x C log-probs and labels (-inf padded): per sample the non-blank labels among the frame's top
        beam_size + 1 that may beat the threshold when extending the best beam (a float32 bound at or below
        the exact one, so a few too many; `admit` tests each extension exactly)."""
        m, top = len(rows), max(min(self.k + 1, rows.shape[1] - 1), 0)
        bound = np.nextafter((threshold - best_old).astype(rows.dtype), -np.inf)
        mask = rows > bound[:, None]
        mask[:, self.blank] = False
        r, c = np.nonzero(mask)
        counts = np.bincount(r, minlength=m)
        lp, labels = np.full((m, top), -np.inf), np.full((m, top), self.blank)
        few = counts[r] <= top
        at = np.arange(len(r)) - (np.cumsum(counts) - counts)[r]
        lp[r[few], at[few]], labels[r[few], at[few]] = rows[r[few], c[few]], c[few]
        many = np.flatnonzero(counts > top)
        if many.size:
            masked = np.where(mask[many], rows[many], -np.inf)
            labels[many] = np.argpartition(masked, -top, axis=1)[:, -top:]
            lp[many] = masked[np.arange(len(many))[:, None], labels[many]]
        return lp, labels

    def admit(self, t: int, s: np.ndarray, old: tuple[np.ndarray, np.ndarray], merged: tuple[np.ndarray, ...],
              best_old: np.ndarray, threshold: np.ndarray) -> None:
        """New beams for samples `s` (sorted positions): the best beam_size of the merged beams and of every
        beam extended by a candidate label, a prefix already in the beam counting once (its mass came in
        the merge). Ties keep the merged beam, as a new prefix must beat the threshold."""
        k, m, vocab = self.k, len(s), self.frames.shape[-1]
        old_total, old_blank = old
        cand_lp, cand_label = self.candidates(self.frames[self.order[s], t], best_old, threshold)
        labels, nodes = self.label[s], self.nodes[s]
        repeats = cand_label[:, None, :] == labels[:, :, None]
        score = np.where(repeats, old_blank[:, :, None], old_total[:, :, None]) + cand_lp[:, None, :]  # m x k x C
        r = np.arange(m)[:, None]
        parent_slot = self.parent_at[s] % self.width
        in_beam = ((r * k + parent_slot) * vocab + labels)[parent_slot < k]
        extension = ((r[:, :, None] * k + np.arange(k)[:, None]) * vocab + cand_label[:, None, :])
        fresh = (score > threshold[:, None, None]) & ~np.isin(extension, in_beam)
        pool = np.concatenate([merged[0], score.reshape(m, -1)], axis=1)
        allowed = np.concatenate([nodes >= 0, fresh.reshape(m, -1)], axis=1)
        chosen = np.argsort(np.where(allowed, -pool, np.nan), axis=1, kind="stable")[:, :k]  # nan: not allowed, last
        ok = allowed[r, chosen]
        new = chosen >= k
        width = max(cand_label.shape[1], 1)
        source = np.where(new, (chosen - k) // width, chosen)  # the merged slot, or the beam a new prefix extends
        total = np.where(ok, pool[r, chosen], -np.inf)
        in_blank = np.where(ok & ~new, merged[1][r, source], -np.inf)
        in_label = np.where(new, total, merged[2][r, source])
        new_label = cand_label[r, np.where(new, (chosen - k) % width, 0)]
        label = np.where(ok, np.where(new, new_label, labels[r, source]), self.blank)
        source_node = nodes[r, source]
        parent_node = np.where(ok, np.where(new, source_node, self.parent_node[s][r, source]), -1)
        node = np.where(ok, source_node, -1)
        i, j = np.nonzero(new & ok)
        node[i, j] = self.trie.extend(source_node[i, j], label[i, j])
        self.scores[0, s, :k], self.scores[1, s, :k], self.in_label[s] = total, in_blank, in_label
        self.nodes[s], self.parent_node[s], self.label[s] = node, parent_node, label
        self.parent_at[s] = self.parent_cells(s, node, parent_node, label)

    def parent_cells(self, s: np.ndarray, node: np.ndarray, parent_node: np.ndarray, label: np.ndarray) -> np.ndarray:
        """Where each slot's parent prefix has the score its own extends (total, or ends-in-blank when the
        slot repeats the parent's last label), or an always -inf cell when the parent is not in the beam."""
        span = len(self.trie.parents) + 1
        row = np.arange(len(s))[:, None] * span
        keys = np.where(node >= 0, row + node, -1).ravel()
        order = np.argsort(keys)
        at = np.minimum(np.searchsorted(keys[order], row + parent_node), keys.size - 1)
        slot = order[at] % self.k
        found = (keys[order][at] == row + parent_node) & (parent_node >= 0)
        repeat = label[np.arange(len(s))[:, None], slot] == label
        cell = repeat * self.plane + s[:, None] * self.width + slot
        return np.where(found, cell, self.empty_cell[s][:, None])


def decode(log_probs: torch.Tensor, lengths: torch.Tensor, beam_size: int, blank: int = 0) -> list[list[int]]:
    """Greedy decoding for `beam_size == 1`, prefix beam search otherwise."""
    if beam_size == 1:
        return greedy_decode(log_probs, lengths, blank)
    return beam_search(log_probs, lengths, beam_size, blank)
