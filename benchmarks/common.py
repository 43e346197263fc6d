"""What the benchmark scripts share."""
from __future__ import annotations

from typing import TypeVar

T = TypeVar("T")

# Measured on the shared 2-core machine at load 5.5: a LipNet step took 7 s with 2 threads and 0.3 s with 1
# (each parallel region waits for a descheduled second thread). Ratios between ways are what these scripts report.
THREADS_HELP = "torch threads (default 1: on a busy machine a second thread can make every step many times slower)"


def rotated(ways: list[T], repeat: int) -> list[T]:
    """`ways` starting at a different one on each repeat, so that none always runs first or last."""
    k = repeat % len(ways)
    return ways[k:] + ways[:k]
