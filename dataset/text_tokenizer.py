"""Spoken-language text tokenizers for translation: a pretrained model's, or one trained on the train texts.

Targets are `text tokens + </s> + tgt_lang`, mBART's layout: its `shift_tokens_right` moves the language id to
the front of the decoder input, and generation starts from that same id. A trained tokenizer (HF tokenizers:
whole words, or BPE) is kept as its JSON text, so a checkpoint holds everything prediction needs.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable, Sequence

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from utils.checkpoint import atomic_write
from utils.errors import ConfigError, one_line

SPECIALS = ("<s>", "<pad>", "</s>", "<unk>")  # mBART's ids 0..3


class TextTokenizer:
    """Encodes targets, decodes generated ids; `source` says where it came from (a folder, or 'trained')."""

    def __init__(self, backend: Any, tgt_lang: str, source: str) -> None:
        self.backend, self.tgt_lang, self.source = backend, tgt_lang, source
        self.lang_id = backend.convert_tokens_to_ids(tgt_lang)
        if self.lang_id is None or self.lang_id == backend.unk_token_id:
            raise ConfigError(f"model.TranslationNetwork.TextTokenizer.tgt_lang: {tgt_lang!r} is not a token of "
                              f"the text tokenizer ({source})")
        self.pad_id, self.eos_id = backend.pad_token_id, backend.eos_token_id

    def __len__(self) -> int:
        return len(self.backend)

    def encode_target(self, text: str) -> list[int]:
        return [*self.backend.encode(text, add_special_tokens=False), self.eos_id, self.lang_id]

    def subword_ids(self, text: str) -> list[int]:
        return self.backend.encode(text, add_special_tokens=False)

    def decode(self, ids: Sequence[int]) -> str:
        # no clean-up: it would glue Phoenix's " ." to the word before, unlike the references
        return self.backend.decode(list(ids), skip_special_tokens=True, clean_up_tokenization_spaces=False).strip()

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
    """The tokenizer saved with `save_pretrained` in a local folder; never downloads."""
    if not Path(path).is_dir():
        raise ConfigError(f"text tokenizer folder {path} does not exist")
    try:
        backend = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError) as err:
        raise ConfigError(f"text tokenizer {path} cannot be loaded: {one_line(err)}") from None
    return TextTokenizer(backend, tgt_lang, str(path))


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
