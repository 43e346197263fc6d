"""CTC decoding, shared by every CTC model and by prediction."""
from __future__ import annotations

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
