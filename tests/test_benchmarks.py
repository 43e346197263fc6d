"""Every benchmark runs end to end at its smallest size and prints its comparison (no timing is checked).

These scripts are not imported by the toolkit, so nothing else would notice when a change breaks one.
"""
import sys

import pytest

from conftest import ROOT, run

RUNS = {
    "cached_features": (["--samples", "20", "--steps", "3", "--repeats", "1"], "same losses in every run: yes"),
    "ctc_decoding": (["--inputs", "16", "--repeats", "1"], "same best hypothesis on"),
    "generation": (["--sentences", "2", "--repeats", "1", "--length", "4", "--batch-sizes", "2"], "use_cache=False"),
    "sign_video_input": (["--clips", "1", "--repeats", "1"], "of decode only"),
    "train_step": (["--quick", "--models", "eflip_t", "--variants", "channels-first"], "channels-first"),
}


@pytest.mark.parametrize("script", sorted(RUNS))
def test_benchmark_runs_and_compares(script):
    options, expected = RUNS[script]
    result = run([sys.executable, str(ROOT / "benchmarks" / f"{script}.py"), *options])
    assert expected in result.stdout, result.stdout


def test_grid_benchmark_runs_on_a_corpus(grid_corpus):
    result = run([sys.executable, str(ROOT / "benchmarks/grid_video_input.py"), "--root", str(grid_corpus),
                  "--quick", "--repeats", "1"])
    assert "ours / decode only" in result.stdout, result.stdout
