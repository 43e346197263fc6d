"""Vocabulary pruning: a pretrained mBART cut down to the subwords of the training split plus special tokens.

The token embeddings (shared by encoder and decoder), the output layer and `final_logits_bias` keep only the rows
of the tokenizer's special tokens (language ids included), the config's special ids, and every subword of the
train texts and of their normalised glosses (the gloss embeddings start from those). Only training annotation
files are read, by design: a vocabulary pruned with dev or test text leaks them into the model. Logits of the
kept tokens are those of the unpruned model.

The output folder loads with `MBartForConditionalGeneration.from_pretrained`; beside the model it holds the
unchanged tokenizer and `pruned_vocab.json` (`kept_ids`: the tokenizer id of each row), through which the
toolkit's text tokenizer maps ids both ways.

    python -m modelling.vocab_pruning --model mbart-large-cc25 --train phoenix-2014t.train --output mbart-pruned
"""
from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any, Sequence

import torch
from transformers import MBartForConditionalGeneration

from dataset.annotations import load_annotations, normalize_gloss
from dataset.text_tokenizer import PRUNED_IDS_FILE, pretrained_backend
from utils.checkpoint import atomic_write
from utils.cli import run_main
from utils.errors import ConfigError, DataError, one_line
from utils.logging import setup_logging

log = logging.getLogger(__name__)
ID_KEYS = ("pad_token_id", "bos_token_id", "eos_token_id", "decoder_start_token_id", "forced_bos_token_id",
           "forced_eos_token_id")  # in the model config and its generation config
_VOCAB_ROWS = ("model.shared.weight", "model.encoder.embed_tokens.weight", "model.decoder.embed_tokens.weight",
               "lm_head.weight")


def train_texts(paths: Sequence[str | os.PathLike]) -> list[str]:
    """The texts and normalised glosses of training annotation files; every sample needs a text."""
    texts = []
    for path in paths:
        for sample in load_annotations(path):
            if sample.name.split("/", 1)[0] in ("dev", "test"):
                raise DataError(f"annotation file {path}: sample {sample.name!r} is not from the training split; "
                                "prune with the training split only")
            if sample.text is None:
                raise DataError(f"annotation file {path}: sample {sample.name!r} has no text (vocabulary pruning "
                                "keeps the subwords of the train texts)")
            texts.append(sample.text)
            if sample.gloss is not None:
                texts.append(normalize_gloss(sample.gloss))
    return texts


def kept_token_ids(tokenizer: Any, model: MBartForConditionalGeneration, texts: Sequence[str]) -> list[int]:
    """Sorted tokenizer ids: the special tokens, the model's special ids and every subword of `texts`."""
    kept = set(tokenizer.all_special_ids)
    for config in (model.config, model.generation_config):
        for key in ID_KEYS:
            value = getattr(config, key, None)
            kept.update(value if isinstance(value, list) else [] if value is None else [value])
    for text in texts:
        kept.update(tokenizer.encode(text, add_special_tokens=False))
    return sorted(kept)


def prune_mbart(model: MBartForConditionalGeneration, kept: Sequence[int]) -> MBartForConditionalGeneration:
    """A copy of `model` whose token i is the old token kept[i]; special ids of both configs renumbered."""
    new_id = {old: new for new, old in enumerate(kept)}
    config, generation = copy.deepcopy(model.config), copy.deepcopy(model.generation_config)
    config.vocab_size = len(kept)
    for settings in (config, generation):
        for key in ID_KEYS:
            value = getattr(settings, key, None)
            if value is not None:
                setattr(settings, key, [new_id[v] for v in value] if isinstance(value, list) else new_id[value])
    rows = torch.tensor(kept)
    state = {k: v[rows] if k in _VOCAB_ROWS else v for k, v in model.state_dict().items()}
    state["final_logits_bias"] = state["final_logits_bias"][:, rows]
    pruned = MBartForConditionalGeneration(config).to(model.dtype)
    pruned.load_state_dict(state)
    pruned.generation_config = generation
    return pruned


def prune(model_dir: str | os.PathLike, train_files: Sequence[str | os.PathLike], output: str | os.PathLike) -> list[int]:
    """Write the pruned model, its tokenizer and PRUNED_IDS_FILE to `output` (all or nothing); the kept ids."""
    model_dir, output = Path(model_dir), Path(output)
    if not model_dir.is_dir():
        raise ConfigError(f"--model {model_dir}: no such folder (expected a pretrained mBART saved with save_pretrained)")
    if (model_dir / PRUNED_IDS_FILE).exists():
        raise ConfigError(f"--model {model_dir}: is already pruned (holds {PRUNED_IDS_FILE}); prune the original model")
    if output.exists() and any(output.iterdir()):
        raise ConfigError(f"--output {output}: exists and is not empty")
    tokenizer = pretrained_backend(model_dir)
    try:
        model = MBartForConditionalGeneration.from_pretrained(model_dir, local_files_only=True)
    except (OSError, ValueError) as err:
        raise ConfigError(f"--model {model_dir}: cannot be loaded as mBART: {one_line(err)}") from None
    texts = train_texts(train_files)
    kept = kept_token_ids(tokenizer, model, texts)
    record = json.dumps({"kept_ids": kept, "train_files": [str(p) for p in train_files]}).encode()
    tmp = output.with_name(f".{output.name}.{os.getpid()}.tmp")
    try:
        prune_mbart(model, kept).save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        atomic_write(tmp / PRUNED_IDS_FILE, lambda f: f.write(record))
        os.replace(tmp, output)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("vocabulary pruned from %d to %d tokens (train texts and glosses: %d); written to %s",
             model.config.vocab_size, len(kept), len(texts), output)
    return kept


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m modelling.vocab_pruning", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="folder of a pretrained mBART and its tokenizer")
    parser.add_argument("--train", required=True, nargs="+", metavar="ANNOTATION_FILE",
                        help="annotation files of the TRAINING split only (their texts and glosses); never give dev "
                             "or test files: their words would leak into the model")
    parser.add_argument("--output", required=True, help="new folder: the pruned model, its tokenizer, "
                                                        f"{PRUNED_IDS_FILE}")
    args = parser.parse_args(argv)
    setup_logging(None, is_main=True)
    prune(args.model, args.train, args.output)


if __name__ == "__main__":
    run_main(main)
