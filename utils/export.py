"""Export a trained model for use elsewhere: `python -m utils.export --ckpt FILE --output DIR`.

Writes `DIR/model.safetensors` (the EMA weights when the run kept an EMA, as prediction uses them),
`DIR/config.yaml` (the run's resolved config) and `DIR/vocab.json` (the vocabulary the checkpoint stored).
Each file is written atomically, the weights last, so a folder with `model.safetensors` is complete.
`prediction.py --ckpt DIR` reads such a folder like a checkpoint.
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any, Sequence

import torch
import yaml
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as save_safetensors

from utils.checkpoint import atomic_write, evaluation_weights, load_checkpoint
from utils.cli import run_main
from utils.config import save_config
from utils.errors import CheckpointError, one_line

WEIGHTS, CONFIG, VOCAB = "model.safetensors", "config.yaml", "vocab.json"


def export(ckpt_path: str | os.PathLike, out_dir: str | os.PathLike) -> Path:
    """Write the three files of a training checkpoint into `out_dir`; returns the weights file."""
    payload = load_checkpoint(ckpt_path)
    absent = [key for key in ("model", "vocab", "config") if key not in payload]
    if absent:
        raise CheckpointError(f"checkpoint {ckpt_path} holds no {' or '.join(map(repr, absent))}: "
                              "expected a checkpoint written by training.py")
    weights, which = evaluation_weights(payload)
    not_tensors = [k for k, v in weights.items() if not torch.is_tensor(v)]
    if not_tensors:
        raise CheckpointError(f"checkpoint {ckpt_path}: {not_tensors[:5]} are not tensors; safetensors holds tensors only")
    # Cloned: tied weights (mBART's shared embeddings) share storage, which safetensors refuses to write.
    tensors = {k: v.detach().contiguous().clone() for k, v in weights.items()}
    step = payload.get("state", {}).get("step")
    metadata = {"task": payload["config"]["task"], "weights": which, "step": str(step), "source": str(ckpt_path)}
    out_dir = Path(out_dir)
    save_config(payload["config"], out_dir / CONFIG)
    vocab_text = json.dumps(payload["vocab"], ensure_ascii=False, indent=1) + "\n"
    atomic_write(out_dir / VOCAB, lambda f: f.write(vocab_text.encode()))
    atomic_write(out_dir / WEIGHTS, lambda f: f.write(save_safetensors(tensors, metadata)))
    return out_dir / WEIGHTS


def read_export(folder: str | os.PathLike) -> dict[str, Any]:
    """An exported folder as the parts of a checkpoint that inference reads: model, config, vocab, state.step."""
    folder = Path(folder)
    missing = [name for name in (WEIGHTS, CONFIG, VOCAB) if not (folder / name).is_file()]
    if missing:
        raise CheckpointError(f"folder {folder} lacks {', '.join(missing)}: expected a folder written by utils.export")
    try:
        with safe_open(folder / WEIGHTS, "pt") as weights:
            tensors = {key: weights.get_tensor(key) for key in weights.keys()}
            metadata = weights.metadata() or {}
        config = yaml.safe_load((folder / CONFIG).read_text())
        vocab = json.loads((folder / VOCAB).read_text())
    except (SafetensorError, yaml.YAMLError, ValueError, OSError) as err:
        raise CheckpointError(f"exported model {folder} cannot be read: {one_line(err)}") from None
    step = metadata.get("step")
    return {"model": tensors, "config": config, "vocab": vocab, "ema": None,
            "state": {"step": int(step) if step and step.isdigit() else None}}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", required=True, help="a checkpoint written by training.py")
    parser.add_argument("--output", required=True, help="folder for model.safetensors, config.yaml and vocab.json")
    args = parser.parse_args(argv)
    path = export(args.ckpt, args.output)
    print(f"wrote {path}, {Path(args.output) / CONFIG} and {Path(args.output) / VOCAB}", flush=True)


if __name__ == "__main__":
    run_main(main)
