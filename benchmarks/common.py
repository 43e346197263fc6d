"""What the benchmark scripts share."""
from __future__ import annotations

from typing import TypeVar

T = TypeVar("T")


def rotated(ways: list[T], repeat: int) -> list[T]:
    """`ways` starting at a different one on each repeat, so that none always runs first or last."""
    k = repeat % len(ways)
    return ways[k:] + ways[:k]
