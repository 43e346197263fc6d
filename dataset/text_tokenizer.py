"""Spoken-language text tokenizers for translation: a pretrained model's, or one trained on the train texts.

Targets are `text tokens + </s> + tgt_lang`, mBART's layout: its `shift_tokens_right` moves the language id to
the front of the decoder input, and generation starts from that same id. A trained tokenizer (HF tokenizers:
whole words, or BPE) is kept as its JSON text, so a checkpoint holds everything prediction needs.
A pretrained folder written by `modelling.vocab_pruning` holds `pruned_vocab.json`, the tokenizer id of each row
of the pruned model: ids pass through it on encode (subwords not kept become <unk>) and back on decode.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Iterable, Sequence

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from utils.checkpoint import atomic_write
from utils.errors import ConfigError, one_line

log = logging.getLogger(__name__)
SPECIALS = ("<s>", "<pad>", "</s>", "<unk>")  # mBART's ids 0..3
PRUNED_IDS_FILE = "pruned_vocab.json"


class TextTokenizer:
    """Encodes targets, decodes generated ids; `source` says where it came from (a folder, or 'trained').
    With `kept_ids` (a pruned model: the tokenizer id of each model id) every id is the model's."""

    def __init__(self, backend: Any, tgt_lang: str, source: str, kept_ids: Sequence[int] | None = None) -> None:
        self.backend, self.tgt_lang, self.source = backend, tgt_lang, source
        self.kept_ids = list(kept_ids) if kept_ids is not None else None
        self._model_ids = {old: new for new, old in enumerate(self.kept_ids or ())}
        lang_id = backend.convert_tokens_to_ids(tgt_lang)
        if lang_id is None or lang_id == backend.unk_token_id or (self.pruned and lang_id not in self._model_ids):
            raise ConfigError(f"model.TranslationNetwork.TextTokenizer.tgt_lang: {tgt_lang!r} is not a token of "
                              f"the text tokenizer ({source})")
        self.lang_id, self.pad_id, self.eos_id, self.unk_id = self._to_model(
            [lang_id, backend.pad_token_id, backend.eos_token_id, backend.unk_token_id])

    @property
    def pruned(self) -> bool:
        return self.kept_ids is not None

    def __len__(self) -> int:
        return len(self.kept_ids) if self.pruned else len(self.backend)

    def encode_target(self, text: str) -> list[int]:
        return [*self.subword_ids(text), self.eos_id, self.lang_id]

    def subword_ids(self, text: str) -> list[int]:
        return self._to_model(self.backend.encode(text, add_special_tokens=False))

    def not_kept(self, texts: Iterable[str]) -> tuple[int, int]:
        """How many subwords of `texts` a pruned vocabulary lacks (they encode as <unk>), and of how many."""
        ids = [i for text in texts for i in self.backend.encode(text, add_special_tokens=False)]
        return (sum(i not in self._model_ids for i in ids) if self.pruned else 0), len(ids)

    def decode(self, ids: Sequence[int]) -> str:
        ids = [self.kept_ids[i] for i in ids] if self.pruned else list(ids)
        # no clean-up: it would glue Phoenix's " ." to the word before, unlike the references
        return self.backend.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False).strip()

    def _to_model(self, ids: list[int]) -> list[int]:
        if not self.pruned:
            return ids
        unk = self._model_ids[self.backend.unk_token_id]
        return [self._model_ids.get(i, unk) for i in ids]

    def to_state(self) -> dict[str, Any]:
        if self.source == "trained":
            return {"tokenizer_json": self.backend.backend_tokenizer.to_str(), "tgt_lang": self.tgt_lang}
        return {"pretrained": self.source, "tgt_lang": self.tgt_lang}

    @classmethod
    def from_state(cls, state: dict[str, Any], pretrained: str | None = None) -> TextTokenizer:
        """A trained tokenizer from its JSON; a pretrained one from `pretrained` (the config's folder now),
        else the folder it was loaded from in training."""
        if "tokenizer_json" in state:
            return cls(_wrap(Tokenizer.from_str(state["tokenizer_json"])), state["tgt_lang"], "trained")
        return load_pretrained(pretrained or state["pretrained"], state["tgt_lang"])

    def save(self, path: str | os.PathLike) -> None:
        """Write a trained tokenizer as HF tokenizers JSON (`tokenizers.Tokenizer.from_file` reads it)."""
        text = self.backend.backend_tokenizer.to_str()
        atomic_write(path, lambda f: f.write(text.encode()))


def load_trained(path: str | os.PathLike, tgt_lang: str) -> TextTokenizer:
    return TextTokenizer(_wrap(Tokenizer.from_file(str(path))), tgt_lang, "trained")


def load_pretrained(path: str | os.PathLike, tgt_lang: str) -> TextTokenizer:
    """The tokenizer saved with `save_pretrained` in a local folder (pruned when it holds PRUNED_IDS_FILE);
    never downloads."""
    backend = pretrained_backend(path)
    pruning = Path(path) / PRUNED_IDS_FILE
    kept_ids = _read_kept_ids(pruning, backend) if pruning.is_file() else None
    if kept_ids is not None:
        log.info("text tokenizer %s: pruned to %d of its %d tokens", path, len(kept_ids), len(backend))
    return TextTokenizer(backend, tgt_lang, str(path), kept_ids)


def pretrained_backend(path: str | os.PathLike) -> Any:
    if not Path(path).is_dir():
        raise ConfigError(f"text tokenizer folder {path} does not exist")
    try:
        return AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError) as err:
        raise ConfigError(f"text tokenizer {path} cannot be loaded: {one_line(err)}") from None


def _read_kept_ids(path: Path, backend: Any) -> list[int]:
    try:
        kept = json.loads(path.read_text())["kept_ids"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ConfigError(f"vocabulary pruning map {path} cannot be read: {one_line(err)}") from None
    specials = {backend.pad_token_id, backend.eos_token_id, backend.unk_token_id}
    if not (isinstance(kept, list) and all(type(i) is int and 0 <= i < len(backend) for i in kept)
            and len(set(kept)) == len(kept) and specials <= set(kept)):
        raise ConfigError(f"vocabulary pruning map {path}: 'kept_ids' must be distinct ids of the tokenizer "
                          f"(below {len(backend)}) including <pad>, </s> and <unk>")
    return kept


def train_tokenizer(texts: Iterable[str], model_type: str, vocab_size: int, tgt_lang: str) -> TextTokenizer:
    """A tokenizer of `texts` (the train split's only): every word ('word'), or BPE pieces ('bpe')."""
    specials = [*SPECIALS, tgt_lang]
    if model_type == "word":
        tokenizer = Tokenizer(models.WordLevel(unk_token="<unk>"))
        tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
        trainer = trainers.WordLevelTrainer(special_tokens=specials, vocab_size=10**9)
    elif model_type == "bpe":
        tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
        tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
        tokenizer.decoder = decoders.Metaspace()
        trainer = trainers.BpeTrainer(special_tokens=specials, vocab_size=vocab_size)
    else:
        raise ConfigError(f"model.TranslationNetwork.TextTokenizer.model_type is {model_type!r}, "
                          "expected 'word' or 'bpe'")
    tokenizer.train_from_iterator(list(texts), trainer)
    return TextTokenizer(_wrap(tokenizer), tgt_lang, "trained")


def _wrap(tokenizer: Tokenizer) -> PreTrainedTokenizerFast:
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", pad_token="<pad>", eos_token="</s>",
                                   unk_token="<unk>")
