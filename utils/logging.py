"""Rank-0 logging: console and `model_dir/train.log`, TensorBoard scalars, progress with rate and ETA."""
from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

import torch


def setup_logging(model_dir: str | Path | None, is_main: bool, filename: str = "train.log") -> None:
    """Console (and, on rank 0, a log file in `model_dir`); other ranks print warnings only."""
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stdout)]
    if is_main and model_dir is not None:
        Path(model_dir).mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(Path(model_dir) / filename))
    logging.basicConfig(
        level=logging.INFO if is_main else logging.WARNING,
        format="%(asctime)s %(levelname)s %(message)s",
        datefmt="%H:%M:%S",
        handlers=handlers,
        force=True,
    )


class Progress:
    """Rate and ETA over optimizer steps; a tqdm bar on a terminal, log lines otherwise."""

    def __init__(self, total_steps: int, done: int, enabled: bool) -> None:
        self.total, self.start_step, self.start = total_steps, done, time.perf_counter()
        self.bar = None
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total_steps, initial=done, unit="step", dynamic_ncols=True)

    def update(self, step: int, text: str) -> str:
        if self.bar is not None:
            self.bar.n = step
            self.bar.set_postfix_str(text, refresh=True)
        elapsed = time.perf_counter() - self.start
        rate = (step - self.start_step) / max(elapsed, 1e-9)
        eta = (self.total - step) / rate if rate > 0 else float("inf")
        return f"step {step}/{self.total} {text} {rate:.2f} step/s eta {_clock(eta)}"

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _clock(seconds: float) -> str:
    if seconds == float("inf"):
        return "?"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


def gpu_memory_gb(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    return torch.cuda.max_memory_allocated(device) / 2**30
