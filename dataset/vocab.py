"""Token vocabularies for CTC targets (characters for lip reading, glosses for sign language), and word classes."""
from __future__ import annotations

import string
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Sequence

from utils.errors import DataError

BLANK = "<blank>"


@dataclass(frozen=True)
class Vocabulary:
    """Id 0 is the CTC blank. `joiner` glues decoded tokens: '' for characters, ' ' for words.

    `unk`, when set, names a token of the vocabulary that `encode` uses for unknown units
    (instead of raising); it must not be the blank.
    """

    tokens: tuple[str, ...]
    joiner: str
    unk: str | None = None

    def __post_init__(self) -> None:
        if self.unk is not None and (self.unk not in self.tokens or self.unk == BLANK
                                     or self.tokens.index(self.unk) == 0):
            raise ValueError(f"unk token {self.unk!r} must be a non-blank token of the vocabulary")

    @property
    def blank(self) -> int:
        return 0

    def __len__(self) -> int:
        return len(self.tokens)

    @cached_property
    def _index(self) -> dict[str, int]:
        # cached_property writes the instance __dict__ directly, which a frozen dataclass allows
        return {t: i for i, t in enumerate(self.tokens)}

    def encode(self, text: str, where: str = "") -> list[int]:
        index = self._index
        units = text.split() if self.joiner == " " else list(text)
        unknown = sorted({u for u in units if u not in index or u == BLANK})
        if unknown and self.unk is not None:
            unk_id, bad = index[self.unk], set(unknown)
            return [unk_id if u in bad else index[u] for u in units]
        if unknown:
            raise DataError(f"{where}: tokens {unknown} are not in the vocabulary")
        return [index[u] for u in units]

    def decode(self, ids: Sequence[int]) -> str:
        return self.joiner.join(self.tokens[i] for i in ids if i != self.blank)

    def to_state(self) -> dict[str, Any]:
        state: dict[str, Any] = {"tokens": list(self.tokens), "joiner": self.joiner}
        if self.unk is not None:  # absent when unset: older states stay byte-identical
            state["unk"] = self.unk
        return state

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> "Vocabulary":
        return cls(tuple(state["tokens"]), state["joiner"], state.get("unk"))


def grid_characters() -> Vocabulary:
    """LipNet's labels: blank 0, space 1, A..Z 2..27 (1 + index in [' ', A-Z])."""
    return Vocabulary((BLANK, " ", *string.ascii_uppercase), joiner="")


@dataclass(frozen=True)
class WordClasses:
    """The classes of a word-level corpus: class i is `words[i]` (no blank). `decode` joins ranked ids
    with spaces, best first, so a hypothesis reads 'best second ...'."""

    words: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.words)

    @cached_property
    def _index(self) -> dict[str, int]:
        return {w: i for i, w in enumerate(self.words)}

    def encode(self, word: str, where: str = "") -> int:
        if word not in self._index:
            raise DataError(f"{where}: word {word!r} is not one of the {len(self.words)} classes")
        return self._index[word]

    def decode(self, ids: Sequence[int]) -> str:
        return " ".join(self.words[i] for i in ids)

    def to_state(self) -> dict[str, Any]:
        return {"words": list(self.words)}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> "WordClasses":
        return cls(tuple(state["words"]))
