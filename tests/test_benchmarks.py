"""Every benchmark runs end to end at its smallest size and prints its comparison (no timing is checked).

These scripts are not imported by the toolkit, so nothing else would notice when a change breaks one.
"""
import importlib.util
import sys

import pytest

from conftest import ROOT, run

RUNS = {
    "cached_features": (["--samples", "20", "--steps", "3", "--repeats", "1"], "same losses in every run: yes"),
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


def test_ctc_benchmark_compares_or_says_how_to_get_its_baseline():
    """pyctcdecode (the `bench` extra) needs numpy < 2, so the test install leaves it out."""
    result = run([sys.executable, str(ROOT / "benchmarks/ctc_decoding.py"), "--inputs", "16", "--repeats", "1"],
                 check=False)
    if importlib.util.find_spec("pyctcdecode"):
        assert result.returncode == 0 and "same best hypothesis on" in result.stdout, result.stdout + result.stderr
    else:
        assert result.returncode == 1 and "needs pyctcdecode: pip install -e '.[bench]'" in result.stderr
