"""Experiment configuration: YAML file + `key.path=value` overrides, checked against a schema.

The resolved config is a plain nested dict (SLRT style: `cfg['training']['batch_size']`), so it can be
written to YAML and stored in checkpoints as is. Every key a config may hold is declared in `SCHEMA`
(shared sections) or `TASK_SCHEMAS` (per task); anything else is refused before work starts, with the
closest valid key named.
"""
from __future__ import annotations

import copy
import difflib
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import yaml

from utils.checkpoint import atomic_write
from utils.errors import ConfigError, one_line, short_repr

class _Required:
    """Marks a key without a default. One instance, kept by deepcopy so `is REQUIRED` holds in copies."""

    def __repr__(self) -> str:
        return "REQUIRED"

    def __deepcopy__(self, memo: dict) -> _Required:
        return self


REQUIRED = _Required()


@dataclass(frozen=True)
class Field:
    default: Any
    types: tuple[type, ...]
    choices: tuple | None = None
    path: bool = False  # an input file or folder: must exist when set
    item: type | None = None  # element type of a list
    length: int | None = None  # exact length of a list
    minimum: float | None = None  # bounds: minimum/maximum inclusive, above/below exclusive
    maximum: float | None = None
    above: float | None = None
    below: float | None = None


@dataclass(frozen=True)
class MapOf:
    """A mapping with free keys, e.g. per-module learning rates; `required` keys must be present."""

    item: Field
    default: dict
    required: tuple[str, ...] = ()


INT, FLOAT, STR, BOOL, LIST = (int,), (float,), (str,), (bool,), (list,)

SCHEMA: dict[str, Any] = {
    "task": Field(REQUIRED, STR),
    "training": {
        "model_dir": Field(REQUIRED, STR),
        "from_ckpt": Field(None, STR, path=True),
        "random_seed": Field(42, INT, minimum=0, maximum=2**32 - 1),  # a seed numpy, torch and Python all accept
        "shuffle": Field(True, BOOL),
        "num_workers": Field(2, INT, minimum=0),
        "batch_size": Field(8, INT, minimum=1),
        "gradient_accumulation": Field(1, INT, minimum=1),
        "total_epoch": Field(REQUIRED, INT, minimum=1),
        "keep_last_ckpts": Field(2, INT, minimum=1),
        "clip_grad_norm": Field(None, FLOAT, above=0),
        "amp": Field("none", STR, choices=("none", "bf16", "fp16")),
        "sync_bn": Field(False, BOOL),
        "length_bucketing": Field(False, BOOL),
        "max_nonfinite_steps": Field(5, INT, minimum=1),
        "log_freq": Field(20, INT, minimum=1),
        "ema": {"enabled": Field(False, BOOL), "decay": Field(0.999, FLOAT, minimum=0, below=1)},
        "validation": {
            "unit": Field("epoch", STR, choices=("epoch", "step")),
            "freq": Field(1, INT, minimum=1),
            "metric": Field(None, STR),
        },
        "optimization": {
            "optimizer": Field("Adam", STR, choices=("Adam", "AdamW", "SGD")),
            "learning_rate": MapOf(Field(None, FLOAT, minimum=0), {}, required=("default",)),
            "weight_decay": Field(0.0, FLOAT, minimum=0),
            "betas": Field([0.9, 0.999], LIST, item=float, length=2),
            "momentum": Field(0.9, FLOAT, minimum=0, maximum=1),
            "scheduler": Field("cosine", STR, choices=("cosine", "step", "constant")),
            "warmup_epochs": Field(0.0, FLOAT, minimum=0),
            "min_lr_ratio": Field(0.0, FLOAT, minimum=0, maximum=1),
            "milestones": Field([], LIST, item=float),
            "gamma": Field(0.1, FLOAT, above=0),
        },
    },
    "testing": {
        "batch_size": Field(8, INT, minimum=1),
        "cfg": {"recognition": {"beam_size": Field(1, INT, minimum=1)}},  # CTC: 1 is greedy decoding
    },
}

# Each task adds its own `data`, `model` and `testing` keys, and names its metrics: the first is the
# default for choosing the best checkpoint.
TASK_SCHEMAS: dict[str, dict[str, Any]] = {
    "lip_sentence": {
        "data": {
            "format": Field("grid", STR, choices=("grid",)),
            "root": Field(REQUIRED, STR, path=True),
            "video_pattern": Field("{speaker}/{id}.mpg", STR),
            "align_pattern": Field("align/{speaker}/align/{id}.align", STR),
            "train": Field(REQUIRED, STR, path=True),
            "dev": Field(REQUIRED, STR, path=True),
            "test": Field(None, STR, path=True),
            "skip_bad_samples": Field(False, BOOL),
            "input": {
                "height": Field(64, INT, minimum=1),
                "width": Field(128, INT, minimum=1),
                "channel_order": Field("BGR", STR, choices=("BGR", "RGB")),
                "max_frames": Field(75, INT, minimum=1),
            },
            "augmentation": {"horizontal_flip": Field(0.5, FLOAT, minimum=0, maximum=1)},
        },
        "model": {
            "LipNet": {
                "dropout": Field(0.5, FLOAT, minimum=0, below=1),
                "channels": Field([32, 64, 96], LIST, item=int, length=3),
                "hidden_size": Field(256, INT, minimum=1),
                "batch_norm": Field(False, BOOL),
                "load_ckpt": Field(None, STR, path=True),
            }
        },
    },
    # Word-level lip reading (LRW) with EfLip; the EfLip seed's options are efficientnet_size, in_channels,
    # dropout, words and words_list here, training.ema.{enabled,decay} and training.optimization's keys.
    "lip_word": {
        "data": {
            "format": Field("mp4", STR, choices=("mp4", "npz")),
            "root": Field(REQUIRED, STR, path=True),  # <root>/<WORD>/<split>/<WORD>_00001.{mp4,npz}
            "metadata_root": Field(None, STR, path=True),  # the .txt files' root (lipread_mp4); None: root
            "train": Field("train", STR),  # split folder names
            "dev": Field("val", STR),
            "test": Field("test", STR),
            "words": Field(None, INT, minimum=1),  # the first N of the sorted word folders; None: all
            "words_list": Field(None, LIST, item=str),  # or exactly these words
            "word_boundary": Field(False, BOOL),  # the .txt Duration as a per-frame model input
            "skip_bad_samples": Field(False, BOOL),
            "input": {
                "roi": Field(None, LIST, item=int, length=4),  # [top, left, height, width] cut before resizing
                "frame_size": Field(96, INT, minimum=8),  # frames resized to this square
                "crop_size": Field(88, INT, minimum=8),  # random (train) or centre crop of the resized frames
                "max_frames": Field(29, INT, minimum=1),
                "mean": Field(0.421, FLOAT),  # of grey values in [0, 1]: the common LRW pipelines' values
                "std": Field(0.165, FLOAT, above=0),
            },
            "augmentation": {
                "horizontal_flip": Field(0.5, FLOAT, minimum=0, maximum=1),
                "time_mask": Field(10, INT, minimum=0),  # at most this many consecutive frames set to the mean frame
                "mixup": Field(0.4, FLOAT, minimum=0),  # Beta(alpha, alpha) mixing of clip pairs; 0 turns it off
            },
        },
        "model": {
            "EfLip": {
                "efficientnet_size": Field("T", STR, choices=("T", "S", "B")),
                "in_channels": Field(1, INT, choices=(1, 3)),  # grayscale or RGB
                "dropout": Field(0.4, FLOAT, minimum=0, below=1),
                "stochastic_depth": Field(0.2, FLOAT, minimum=0, below=1),
                "bn_momentum": Field(0.01, FLOAT, above=0, maximum=1),  # PyTorch's sense: Keras' 0.99 is 0.01
                "hidden_size": Field(384, INT, minimum=2),
                "transformer": {
                    "layers": Field(1, INT, minimum=1),
                    "heads": Field(8, INT, minimum=1),
                    "ff_size": Field(128, INT, minimum=1),
                },
                "tcn": {
                    "hidden_size": Field(463, INT, minimum=1),
                    "layers": Field(4, INT, minimum=1),
                    "kernel_size": Field(3, INT, minimum=1),
                },
                "label_smoothing": Field(0.1, FLOAT, minimum=0, below=1),
                "load_ckpt": Field(None, STR, path=True),
            }
        },
    },
    # Sign2Gloss, SingleStream-SLT's keys where SLRT has them.
    "S2G": {
        "data": {
            "dataset_name": Field("phoenix-2014t", STR),
            "train": Field(REQUIRED, STR, path=True),  # annotations: SLRT pickle, Phoenix CSV or JSON lines
            "dev": Field(REQUIRED, STR, path=True),
            "test": Field(None, STR, path=True),
            "skip_bad_samples": Field(False, BOOL),
            "video": {
                "root": Field(REQUIRED, STR, path=True),
                # {split} {name} {video}: an mp4/avi file, a frame folder, or <zip>@<member pattern>
                "pattern": Field("{split}/{name}.mp4", STR),
            },
            "input": {
                "max_frames": Field(400, INT, minimum=4),
                "frame_size": Field(None, LIST, item=int, length=2),  # [height, width] after decoding
            },
            "transform_cfg": {
                "img_size": Field(224, INT, minimum=16),
                "crop_scale": Field([0.7, 1.0], LIST, item=float, length=2),
                "crop_ratio": Field([0.75, 1.3], LIST, item=float, length=2),
                "color_jitter": {
                    "p": Field(0.3, FLOAT, minimum=0, maximum=1),
                    "brightness": Field(0.4, FLOAT, minimum=0),
                    "contrast": Field(0.4, FLOAT, minimum=0),
                    "saturation": Field(0.4, FLOAT, minimum=0),
                    "hue": Field(0.1, FLOAT, minimum=0, maximum=0.5),
                },
                "hflip": Field(0.0, FLOAT, minimum=0, maximum=1),
                "eval_crop": Field(1.0, FLOAT, above=0, maximum=1),
                "temporal_augmentation": {"tmin": Field(0.5, FLOAT, above=0), "tmax": Field(1.5, FLOAT, above=0)},
            },
        },
        "model": {
            "RecognitionNetwork": {
                "GlossTokenizer": {"gloss2id_file": Field(None, STR, path=True)},  # None: from train glosses
                "frontend": Field("s3d", STR, choices=("s3d", "efficientnet")),
                "input_convention": Field("slrt_bgr", STR, choices=("slrt_bgr", "torchvision_rgb")),
                # use_block counts torchvision's s3d().features: SLRT's use_block 4 (Mixed_4f) is 13 here
                "s3d": {
                    "use_block": Field(13, INT, minimum=1, maximum=16),
                    "freeze_block": Field(1, INT, minimum=0, maximum=16),
                    "pretrained_ckpt": Field(None, STR, path=True),
                    "bn_momentum": Field(None, FLOAT, above=0, maximum=1),  # None: torchvision's 0.001
                },
                "efficientnet": {
                    "scale": Field("B", STR, choices=("T", "S", "B")),
                    "stem_3d": Field(False, BOOL),
                    "pretrained_ckpt": Field(None, STR, path=True),
                },
                "visual_head": {
                    "hidden_size": Field(512, INT, minimum=1),
                    "ff_size": Field(2048, INT, minimum=1),
                    "ff_kernelsize": Field([3, 3], LIST, item=int, length=2),
                    "pe": Field(True, BOOL),
                    "dropout": Field(0.1, FLOAT, minimum=0, below=1),
                },
                "load_ckpt": Field(None, STR, path=True),
            }
        },
    },
    # Gloss2Text, SLRT's keys where SLRT has them. Without pretrained_model_name_or_path the mBART is built
    # from overwrite_cfg with random weights and the text tokenizer is trained on the train split's texts.
    "G2T": {
        "data": {
            "dataset_name": Field("phoenix-2014t", STR),
            "train": Field(REQUIRED, STR, path=True),  # annotations with gloss and text, any format of S2G
            "dev": Field(REQUIRED, STR, path=True),
            "test": Field(None, STR, path=True),
            "skip_bad_samples": Field(False, BOOL),
        },
        "model": {
            "TranslationNetwork": {
                "pretrained_model_name_or_path": Field(None, STR, path=True),  # a save_pretrained folder
                # MBartConfig keys; null keeps the pretrained model's value (or MBartConfig's default)
                "overwrite_cfg": {
                    "d_model": Field(None, INT, minimum=1),
                    "encoder_layers": Field(None, INT, minimum=1),
                    "decoder_layers": Field(None, INT, minimum=1),
                    "encoder_attention_heads": Field(None, INT, minimum=1),
                    "decoder_attention_heads": Field(None, INT, minimum=1),
                    "encoder_ffn_dim": Field(None, INT, minimum=1),
                    "decoder_ffn_dim": Field(None, INT, minimum=1),
                    "max_position_embeddings": Field(None, INT, minimum=2),
                    "scale_embedding": Field(None, BOOL),
                    "dropout": Field(None, FLOAT, minimum=0, below=1),
                    "attention_dropout": Field(None, FLOAT, minimum=0, below=1),
                    "activation_dropout": Field(None, FLOAT, minimum=0, below=1),
                },
                "GlossTokenizer": {"gloss2id_file": Field(None, STR, path=True)},  # None: from train glosses
                "GlossEmbedding": {
                    "gloss2embed_file": Field(None, STR, path=True),  # a torch-saved dict gloss -> d_model vector
                    "freeze": Field(False, BOOL),
                },
                "TextTokenizer": {
                    "pretrained_model_name_or_path": Field(None, STR, path=True),  # None: the model's, or trained
                    "tgt_lang": Field("de_DE", STR),  # ends every target and starts generation
                    "model_type": Field("word", STR, choices=("word", "bpe")),  # a trained tokenizer's model
                    "vocab_size": Field(8000, INT, minimum=8),  # bpe only
                },
                "label_smoothing": Field(0.1, FLOAT, minimum=0, below=1),
                "freeze_txt_embed": Field(False, BOOL),
                "load_ckpt": Field(None, STR, path=True),
            }
        },
        "testing": {
            "cfg": {
                "translation": {
                    "num_beams": Field(4, INT, minimum=1),
                    "max_length": Field(100, INT, minimum=2),
                    "length_penalty": Field(1.0, FLOAT),
                    # sacrebleu's tokenisation of references and hypotheses for BLEU and ROUGE-L: 13a (German,
                    # English ...), zh (each Chinese character a token), none (whitespace: SLRT's scores)
                    "metric_tokenize": Field("13a", STR, choices=("13a", "zh", "none")),
                }
            }
        },
    },
}


def _sign_translation_schema() -> dict[str, Any]:
    """Sign2Text: Sign2Gloss's data and RecognitionNetwork, Gloss2Text's TranslationNetwork and decoding, the VL-mapper."""
    s2g, g2t = TASK_SCHEMAS["S2G"], TASK_SCHEMAS["G2T"]
    data = copy.deepcopy(s2g["data"])
    data["video"]["root"] = Field(None, STR, path=True)  # not read when training on cached features
    # feature: cached frontend features (the VisualHead trains); head_feature: cached VisualHead outputs (the
    # recognition branch is frozen, only the mapper and mBART train); video: end to end
    data["input_type"] = Field("feature", STR, choices=("feature", "head_feature", "video"))
    data["feature_cache"] = Field(None, STR)  # a folder extract_feature.py writes
    return {
        "data": data,
        "model": {
            "RecognitionNetwork": copy.deepcopy(s2g["model"]["RecognitionNetwork"]),  # load_ckpt: the S2G checkpoint
            "VLMapper": {
                "type": Field("projection", STR, choices=("projection", "embedding")),
                "hidden_size": Field(1024, INT, minimum=1),  # projection: gloss features -> hidden -> d_model
            },
            "TranslationNetwork": copy.deepcopy(g2t["model"]["TranslationNetwork"]),  # load_ckpt: a G2T checkpoint
            "recognition_weight": Field(1.0, FLOAT, minimum=0),  # loss = translation + this x CTC
        },
        "testing": copy.deepcopy(g2t["testing"]),
    }


TASK_SCHEMAS["S2T"] = _sign_translation_schema()
TASK_METRICS: dict[str, tuple[str, ...]] = {"lip_sentence": ("cer", "wer", "loss"), "S2G": ("wer", "loss"),
                                            "G2T": ("bleu4", "rouge_l", "bleu1", "loss"),
                                            "S2T": ("bleu4", "rouge_l", "bleu1", "wer", "loss"),
                                            "lip_word": ("top1", "top5", "loss")}
LOWER_IS_BETTER = {"wer", "cer", "loss"}


def task_schema(task: str) -> dict[str, Any]:
    schema = copy.deepcopy(SCHEMA)
    _merge(schema, TASK_SCHEMAS[task])
    schema["training"]["validation"]["metric"] = Field(
        TASK_METRICS[task][0], STR, choices=TASK_METRICS[task]
    )
    return schema


def _merge(schema: dict[str, Any], extra: dict[str, Any]) -> None:
    """Add a task's keys to the shared schema, section by section (testing.cfg keeps recognition beside translation)."""
    for key, spec in extra.items():
        if isinstance(spec, dict) and isinstance(schema.get(key), dict):
            _merge(schema[key], spec)
        else:
            schema[key] = copy.deepcopy(spec)


def load_config(path: str | os.PathLike, opts: Iterable[str] = (), check_paths: bool = True) -> dict[str, Any]:
    """Read an experiment file, apply `key.path=value` overrides and return the validated config.

    `check_paths=False` skips the existence check of input files (to inspect a config elsewhere).
    """
    return resolve_config(_read_yaml(Path(path)), str(path), opts, check_paths)


def resolve_config(raw: dict[str, Any], source: str, opts: Iterable[str] = (), check_paths: bool = True) -> dict[str, Any]:
    """Apply overrides to a config mapping (a file's, or one a checkpoint stored; changed in place) and validate
    it; errors name `source`."""
    for opt in opts:
        _apply_override(raw, opt)
    task = raw.get("task")
    if not isinstance(task, str) or task not in TASK_SCHEMAS:
        close = difflib.get_close_matches(short_repr(task), TASK_SCHEMAS, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ConfigError(f"{source}: key 'task' is {short_repr(task)}, expected one of {sorted(TASK_SCHEMAS)}{hint}")
    schema = task_schema(task)
    return _Resolver(source, schema, check_paths).section(raw, schema, prefix="")


def resolve_section(raw: dict[str, Any], schema: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Fill defaults into one section and check it (for code that builds part of a config itself)."""
    return _Resolver(f"section {prefix.rstrip('.') or 'config'}", schema, check_paths=False).section(raw, schema, prefix)


def save_config(cfg: dict[str, Any], path: str | os.PathLike) -> None:
    text = yaml.safe_dump(cfg, sort_keys=False)
    atomic_write(path, lambda f: f.write(text.encode()))


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        # safe_load builds only plain YAML types: tags that construct Python objects are refused.
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {one_line(err)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top, got {type(data).__name__}")
    return data


def _apply_override(raw: dict[str, Any], opt: str) -> None:
    key, sep, text = opt.partition("=")
    if not sep or not key:
        raise ConfigError(f"override {opt!r}: expected key.path=value")
    try:
        value = yaml.safe_load(text) if text else None
    except yaml.YAMLError:
        value = text
    node = raw
    parts = key.split(".")
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {opt!r}: {part!r} is a value, not a section")
        node = child
    node[parts[-1]] = value


class _Resolver:
    """Fills defaults and checks one raw config against its schema, naming `source` in every error."""

    def __init__(self, source: str, schema_root: dict, check_paths: bool = True) -> None:
        self.source, self.schema_root, self.check_paths = source, schema_root, check_paths

    def section(self, raw: Any, schema: dict, prefix: str) -> dict[str, Any]:
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise ConfigError(f"{self.source}: key '{prefix.rstrip('.')}' must be a section (mapping), "
                              f"got {short_repr(raw)}")
        for key in raw:
            if key not in schema:
                hint = _suggest(prefix, str(key), schema, self.schema_root)
                raise ConfigError(f"{self.source}: unknown key {short_repr(prefix + str(key))}{hint}")
        out: dict[str, Any] = {}
        for key, spec in schema.items():
            name = prefix + key
            if isinstance(spec, dict):
                out[key] = self.section(raw.get(key), spec, name + ".")
            elif isinstance(spec, MapOf):
                out[key] = self.mapping(raw.get(key, spec.default), spec, name)
            else:
                out[key] = self.field(raw.get(key, spec.default), spec, name)
        return out

    def mapping(self, value: Any, spec: MapOf, name: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise ConfigError(f"{self.source}: key '{name}' must be a mapping, got {short_repr(value)}")
        for key in spec.required:
            if key not in value:
                raise ConfigError(f"{self.source}: key '{name}.{key}' is required")
        for key in value:
            if not str(key).isprintable():  # it would end up inside error messages and logs
                raise ConfigError(f"{self.source}: key '{name}' holds the key {short_repr(key)}, "
                                  "expected a printable name")
        return {str(k): self.field(v, spec.item, f"{name}.{k}") for k, v in value.items()}

    def field(self, value: Any, spec: Field, name: str) -> Any:
        source = self.source
        if value is REQUIRED or (value is None and spec.default is REQUIRED):
            raise ConfigError(f"{source}: key '{name}' is required" + (", got null" if value is None else ""))
        if value is None:
            return None
        value = _coerce(value, spec.types, name, source)
        if spec.item is not None:
            value = [_coerce(v, (spec.item,), f"{name}[{i}]", source) for i, v in enumerate(value)]
            if spec.length is not None and len(value) != spec.length:
                raise ConfigError(f"{source}: key '{name}' must have {spec.length} items, got {len(value)}")
        if spec.choices is not None and value not in spec.choices:
            close = difflib.get_close_matches(str(value), [str(c) for c in spec.choices], n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ConfigError(f"{source}: key '{name}' is {short_repr(value)}, "
                              f"expected one of {list(spec.choices)}{hint}")
        out_of_range = _out_of_range(value, spec)
        if out_of_range:
            raise ConfigError(f"{source}: key '{name}' is {short_repr(value)}, expected {out_of_range}")
        if spec.path and self.check_paths and not Path(value).exists():
            shown = value if value.isprintable() else short_repr(value)
            raise ConfigError(f"{source}: key '{name}' names {shown}, which does not exist")
        return value


def _out_of_range(value: Any, spec: Field) -> str | None:
    """What `value` should have been, if it is outside the field's bounds."""
    checks = ((spec.minimum, "at least", lambda b: value >= b), (spec.maximum, "at most", lambda b: value <= b),
              (spec.above, "above", lambda b: value > b), (spec.below, "below", lambda b: value < b))
    for bound, words, ok in checks:
        if bound is not None and not ok(bound):
            return f"{words} {bound}"
    return None


def _coerce(value: Any, types: tuple[type, ...], name: str, source: str) -> Any:
    # YAML reads 1e-3 as a string and 3 as an int; accept both where a float is expected.
    if float in types and not isinstance(value, bool):
        if isinstance(value, int):
            return float(value)
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{source}: key '{name}' must be a finite number, got {short_repr(value)}")
    is_wrong_bool = isinstance(value, bool) and bool not in types  # bool is an int subclass
    if is_wrong_bool or not isinstance(value, types):
        expected = " or ".join(t.__name__ for t in types)
        raise ConfigError(f"{source}: key '{name}' must be {expected}, got {short_repr(value)}")
    return value


def _suggest(prefix: str, key: str, schema: dict, schema_root: dict) -> str:
    close = difflib.get_close_matches(key, list(schema), n=1, cutoff=0.6)
    if close:
        return f" (did you mean '{prefix}{close[0]}'?)"
    # Never the section the key sits in, nor one above it: that is where the user already is.
    everywhere = [k for k in _all_keys(schema_root) if not prefix.startswith(k + ".")]
    same_leaf = [k for k in everywhere if k.rsplit(".", 1)[-1] == key]
    close = same_leaf or difflib.get_close_matches(prefix + key, everywhere, n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else f"; valid keys here: {', '.join(schema)}"


def _all_keys(schema: dict, prefix: str = "") -> Iterable[str]:
    for key, spec in schema.items():
        yield prefix + key
        if isinstance(spec, dict):
            yield from _all_keys(spec, prefix + key + ".")


def reference() -> str:
    """The configuration reference in Markdown: every key, its type, default and allowed values, the keys all
    tasks share first, then each task's own. `python -m utils.config --reference` prints it (README's copy)."""
    rows = {task: dict(_reference_rows(task_schema(task))) for task in TASK_SCHEMAS}
    first, *others = rows.values()
    shared = {k: v for k, v in first.items() if all(other.get(k) == v for other in others)}
    parts = ["Keys of every task:\n", _reference_table(shared.items())]
    for task, task_rows in rows.items():
        parts += [f"`task: {task}` adds:\n", _reference_table((k, v) for k, v in task_rows.items() if k not in shared)]
    return "\n".join(parts)


def _reference_rows(schema: dict[str, Any], prefix: str = "") -> Iterable[tuple[str, tuple[str, str, str]]]:
    for key, spec in schema.items():
        if isinstance(spec, dict):
            yield from _reference_rows(spec, prefix + key + ".")
        elif isinstance(spec, MapOf):
            keys = f"keys: {', '.join(spec.required)} and any name" if spec.required else "keys: any name"
            values = _allowed(spec.item)
            yield prefix + key, (f"mapping of {_type_name(spec.item)}", _shown(spec.default),
                                 f"{keys}; values {values}" if values else keys)
        else:
            yield prefix + key, (_type_name(spec), _shown(spec.default), _allowed(spec))


def _type_name(spec: Field) -> str:
    name = " or ".join(t.__name__ for t in spec.types)
    if spec.item is not None:
        name = f"list of {f'{spec.length} ' if spec.length else ''}{spec.item.__name__}"
    return "path" if spec.path else name


def _shown(value: Any) -> str:
    if value is REQUIRED:
        return "required"
    if isinstance(value, str):
        return value
    return "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


def _allowed(spec: Field) -> str:
    words = []
    if spec.choices is not None:
        words.append("one of " + ", ".join(map(str, spec.choices)))
    for bound, sign in ((spec.minimum, ">="), (spec.maximum, "<="), (spec.above, ">"), (spec.below, "<")):
        if bound is not None:
            words.append(f"{sign} {bound}")
    if spec.path:
        words.append("must exist")
    return ", ".join(words)


def _reference_table(rows: Iterable[tuple[str, tuple[str, str, str]]]) -> str:
    lines = ["| key | type | default | allowed |", "| --- | --- | --- | --- |"]
    lines += [f"| `{key}` | {kind} | {default if default == 'required' else f'`{default}`'} | {allowed} |"
              for key, (kind, default, allowed) in rows]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    import sys

    if sys.argv[1:] != ["--reference"]:
        sys.exit("usage: python -m utils.config --reference   (prints the configuration reference in Markdown)")
    print(reference(), end="")
