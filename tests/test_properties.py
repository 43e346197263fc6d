"""Property-based tests (hypothesis): annotation loading, config loading and CTC decoding on generated inputs.

Whatever the input, a loader returns well-typed records or raises its own one-line error naming the file;
it never crashes with another exception, never hangs, never runs code.
"""
from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from dataset.annotations import SignSample, load_annotations
from utils.config import TASK_SCHEMAS, load_config, save_config, task_schema
from utils.ctc import decode, greedy_decode, infeasible_targets
from utils.errors import ConfigError, DataError

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

# --------------------------------------------------------------------------------------------
# Annotations
# --------------------------------------------------------------------------------------------

PLAIN = st.recursive(
    st.none() | st.booleans() | st.integers(-2, 10**12) | st.floats() | st.text(max_size=8) | st.binary(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)
KEYS = ("name", "gloss", "text", "signer", "num_frames", "folder", "sign", "alignments")
ENTRY = st.dictionaries(st.sampled_from(KEYS), PLAIN | st.text(min_size=1, max_size=12) | st.integers(0, 500))
VALID = [{"name": f"train/v{i}", "signer": "S1", "gloss": "HEUTE REGEN", "text": "heute regnet es .",
          "num_frames": 12, "sign": torch.empty(0), "alignments": {}} for i in range(3)]


def assert_loads_or_one_line(path: Path) -> None:
    try:
        samples = load_annotations(path)
    except DataError as err:
        assert str(path) in str(err) and "\n" not in str(err), str(err)
        return
    assert samples and all(isinstance(s, SignSample) and isinstance(s.name, str) and s.name.strip() for s in samples)
    for s in samples:
        assert all(v is None or isinstance(v, str) for v in (s.gloss, s.text, s.signer, s.video))
        assert s.num_frames is None or (type(s.num_frames) is int and s.num_frames >= 0)


@SETTINGS
@given(content=st.binary(max_size=300), compress=st.booleans())
def test_any_bytes_load_as_annotations_or_fail_in_one_line(tmp_path, content, compress):
    path = tmp_path / "random.train"
    path.write_bytes(gzip.compress(content) if compress else content)
    assert_loads_or_one_line(path)


@SETTINGS
@given(entries=st.lists(ENTRY | PLAIN, max_size=4), protocol=st.sampled_from([0, 2, 4, 5]), compress=st.booleans())
def test_pickled_entries_of_any_keys_and_types_load_typed_or_fail_in_one_line(tmp_path, entries, protocol, compress):
    path = tmp_path / "entries.train"
    data = pickle.dumps(entries, protocol=protocol)
    path.write_bytes(gzip.compress(data) if compress else data)
    assert_loads_or_one_line(path)


@SETTINGS
@given(cut=st.integers(0, 10**6), flips=st.lists(st.tuples(st.integers(0, 10**6), st.integers(1, 255)), max_size=4),
       protocol=st.sampled_from([0, 2, 4]))
def test_a_truncated_or_bit_flipped_slrt_pickle_loads_or_fails_in_one_line(tmp_path, cut, flips, protocol):
    data = bytearray(pickle.dumps(VALID, protocol=protocol))
    for at, mask in flips:
        data[at % len(data)] ^= mask
    path = tmp_path / "damaged.train"
    path.write_bytes(bytes(data[: cut % (len(data) + 1)]))
    assert_loads_or_one_line(path)


# --------------------------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------------------------

def leaf_keys(schema: dict, prefix: str = "") -> list[str]:
    keys = []
    for key, spec in schema.items():
        keys += leaf_keys(spec, f"{prefix}{key}.") if isinstance(spec, dict) else [prefix + key]
    return keys


CONFIG_KEYS = sorted({k for task in TASK_SCHEMAS for k in leaf_keys(task_schema(task))})
YAML_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)
SECTIONS = sorted({key.rpartition(".")[0] for key in CONFIG_KEYS} | {"training.optimization.learning_rate"})
OVERRIDE = st.tuples(
    st.sampled_from(CONFIG_KEYS) | st.tuples(st.sampled_from(SECTIONS), st.text(max_size=6)).map(".".join),
    YAML_VALUES.map(lambda v: yaml.safe_dump(v, default_flow_style=True, width=10**6).strip().removesuffix("...").strip())
    | st.text(max_size=12),
).map("=".join)


@pytest.fixture(scope="module")
def grid_config(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("config")
    for split in ("train", "dev"):
        (root / f"{split}.txt").write_text("s1/abc\n")
    path = root / "exp.yaml"
    path.write_text(yaml.safe_dump({
        "task": "lip_sentence", "data": {"root": str(root), "train": str(root / "train.txt"),
                                         "dev": str(root / "dev.txt")},
        "training": {"model_dir": str(root / "out"), "total_epoch": 1,
                     "optimization": {"learning_rate": {"default": 1e-3}}}}))
    return path


@SETTINGS
@given(overrides=st.lists(OVERRIDE, max_size=3))
def test_any_overrides_give_a_config_that_round_trips_or_one_line_naming_file_or_override(grid_config, tmp_path,
                                                                                          overrides):
    try:
        cfg = load_config(grid_config, overrides)
    except ConfigError as err:
        message = str(err)
        assert "\n" not in message and (message.startswith(str(grid_config)) or message.startswith("override ")), \
            message
        return
    saved = tmp_path / "resolved.yaml"
    save_config(cfg, saved)
    assert load_config(saved) == cfg


@SETTINGS
@given(document=YAML_VALUES | st.text(max_size=80))
def test_any_yaml_document_is_a_config_or_one_line_naming_the_file(tmp_path, document):
    path = tmp_path / "any.yaml"
    path.write_text(document if isinstance(document, str) else yaml.safe_dump(document))
    with pytest.raises(ConfigError) as err:  # no generated document has the required keys
        load_config(path)
    assert str(err.value).startswith(str(path)) and "\n" not in str(err.value)


# --------------------------------------------------------------------------------------------
# CTC decoding
# --------------------------------------------------------------------------------------------

@st.composite
def ctc_outputs(draw: st.DrawFn, finite: bool = False) -> tuple[torch.Tensor, torch.Tensor, int]:
    """B x T x V log-probabilities (some frames -inf where a token is impossible), lengths and a blank id."""
    batch, frames, labels = draw(st.integers(1, 3)), draw(st.integers(0, 8)), draw(st.integers(2, 5))
    logits = np.array(draw(st.lists(st.floats(-30, 30), min_size=batch * frames * labels,
                                    max_size=batch * frames * labels)), dtype=np.float32)
    log_probs = torch.log_softmax(torch.from_numpy(logits.reshape(batch, frames, labels)), dim=-1)
    if not finite:
        log_probs[torch.from_numpy(logits.reshape(batch, frames, labels) > 25)] = -float("inf")
    lengths = torch.tensor(draw(st.lists(st.integers(0, frames), min_size=batch, max_size=batch)))
    return log_probs, lengths, draw(st.integers(0, labels - 1))


@SETTINGS
@given(outputs=ctc_outputs(), beam_size=st.integers(1, 6))
def test_decoding_gives_labels_only_from_the_counted_frames(outputs, beam_size):
    log_probs, lengths, blank = outputs
    decoded = decode(log_probs, lengths, beam_size, blank)
    tail_changed = log_probs.clone()
    for b, length in enumerate(lengths.tolist()):
        tail_changed[b, length:] = torch.log_softmax(torch.randn_like(tail_changed[b, length:]), dim=-1)
    assert decode(tail_changed, lengths, beam_size, blank) == decoded
    for tokens, length in zip(decoded, lengths.tolist()):
        assert len(tokens) <= length and all(0 <= t < log_probs.shape[-1] and t != blank for t in tokens)


@SETTINGS
@given(outputs=ctc_outputs(finite=True))
def test_greedy_decoding_is_the_collapsed_best_path(outputs):
    log_probs, lengths, blank = outputs
    assume(not (log_probs.max(-1).values.unsqueeze(-1) == log_probs).sum(-1).gt(1).any())  # no argmax ties
    for tokens, path, length in zip(greedy_decode(log_probs, lengths, blank), log_probs.argmax(-1).tolist(),
                                    lengths.tolist()):
        collapsed = [t for i, t in enumerate(path[:length]) if t != blank and (i == 0 or path[i - 1] != t)]
        assert tokens == collapsed


@SETTINGS
@given(targets=st.lists(st.lists(st.integers(1, 3), max_size=6), min_size=1, max_size=4), data=st.data())
def test_infeasible_targets_counts_samples_shorter_than_target_plus_repeats(targets, data):
    needed = [len(t) + sum(a == b for a, b in zip(t, t[1:])) for t in targets]
    lengths = [data.draw(st.integers(0, n + 2)) for n in needed]
    flat = torch.tensor([x for t in targets for x in t], dtype=torch.long)
    count = infeasible_targets(torch.tensor(lengths), flat, torch.tensor([len(t) for t in targets]))
    assert count == sum(length < n for length, n in zip(lengths, needed))
