"""Sign language annotations: one record type, the on-disk formats, gloss normalisation.

`load_annotations(path)` reads, by content (not by file name):

* SLRT pickles (gzip-compressed or plain; loaded with `utils.safe_pickle.load_pickle`):
  a list of dicts, one per video.
  - Phoenix-2014T and CSL-Daily: keys ``name signer gloss text num_frames sign alignments``
    (CSL-Daily's text is character-level Chinese).  Required: ``name gloss text`` (str) and
    ``num_frames`` (int); ``signer`` (str) is optional; ``sign`` and ``alignments`` are
    ignored.  ``video`` is None: SLRT finds the frames from ``name``.
  - Phoenix-2014: keys ``name num_frames folder signer gloss`` (all required), no text;
    ``folder`` (e.g. ``fullFrame-210x260px/train/<id>/1/*.png``) becomes ``video``.
  The first entry decides between the two (``folder`` without ``text``: Phoenix-2014).
* The official Phoenix-2014T corpus CSVs ``PHOENIX-2014-T.{train,dev,test}.corpus.csv``:
  ``|``-separated with header ``name|video|start|end|speaker|orth|translation``; ``orth`` is
  the gloss, ``translation`` the text, ``speaker`` the signer, ``video`` (``train/<name>/1/*.png``)
  the frames.  The record's name is ``<split>/<name>`` with the split taken from ``video``,
  as in the SLRT pickles.  (The Phoenix-2014 CSVs, header ``id|folder|signer|annotation``,
  are read too.)
* JSON lines, our own format: one JSON object per line (blank lines are skipped), keys

    ============  ======================  =============================================
    key           type                    meaning
    ============  ======================  =============================================
    name          string, required        unique sample id, e.g. ``train/xyz-1``
    video         string or null          video file or frame pattern of the sample
    gloss         string or null          space-separated glosses
    text          string or null          spoken-language translation
    signer        string or null          signer id
    num_frames    integer >= 0 or null    number of frames
    ============  ======================  =============================================

  Each object needs ``name`` and at least one of ``video``, ``gloss``, ``text``; other keys
  are errors (they are probably typos).

Every problem is one `DataError` naming the file, the entry (index, line where there is one,
and name) and the key with what was expected.

Glosses are kept as written in `SignSample.gloss`; `normalize_gloss` is THE canonical form,
used alike for the vocabulary (`gloss_vocabulary`), the CTC targets
(`SignSample.target_gloss`) and the scoring of hypotheses against references.
"""
from __future__ import annotations

import csv
import io
import itertools
import json
import os
import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from pathlib import PurePosixPath
from typing import Any, Iterable, Sequence

from dataset.vocab import BLANK, Vocabulary
from utils.errors import DataError, short_repr
from utils.safe_pickle import PickleUnreadable, load_pickle, loads_pickle, read_maybe_gzip

UNK = "<unk>"
# gloss2ids.pkl (SLRT, mBART-based): special and language tokens before the glosses.
GLOSS2IDS_SPECIALS = frozenset({"<s>", "<pad>", "</s>", "<unk>", "<mask>",
                                "zh_CN", "de_DE", "zh_CSL", "de_DGS"})
_LANGUAGE_CODE = re.compile(r"^[a-z]{2}_[A-Z]{2,}$")  # mBART language ids: de_DE, de_DGS ...


@dataclass(frozen=True)
class SignSample:
    """One annotated sign language video.  ``gloss`` is as written in the file (use
    `target_gloss` / `normalize_gloss` for training and scoring); ``video`` says where the
    frames are when the format says so (None for SLRT pickles)."""

    name: str
    gloss: str | None = None
    text: str | None = None
    signer: str | None = None
    num_frames: int | None = None
    video: str | None = None

    @property
    def target_gloss(self) -> str | None:
        """The normalised gloss sequence (`normalize_gloss`), or None without glosses."""
        return None if self.gloss is None else normalize_gloss(self.gloss)


# --------------------------------------------------------------------------------------------
# Gloss normalisation
# --------------------------------------------------------------------------------------------
#
# Sources:
#  [P14]  the official Phoenix-2014 evaluation script (evaluatePhoenix2014.sh in the
#         phoenix2014-release, "apply some simplifications to the recognition": a sed/perl
#         chain, reproduced in many CSLR repositories).
#  [P14T] neccam/slt signjoey/phoenix_utils/phoenix_cleanup.py, `clean_phoenix_2014_trans`,
#         the Python cleanup for Phoenix-2014T used by Sign Language Transformers and by SLRT
#         to score Phoenix-2014T (`clean_phoenix_2014` there is the Python port of [P14]).
#  [G2I]  SLRT's Phoenix-2014T gloss2ids.pkl: lower case, umlauts spelled ue/oe/ae
#         (``ueberschwemmung``, ``fuenf``, ``heiss``); lower-casing the Phoenix-2014T glosses
#         puts 100 % of them in it (checked on train/dev/test).
#
# Rules of [P14]/[P14T] deliberately NOT applied, because they would merge glosses that the
# Phoenix-2014T annotations, its gloss2ids.pkl and its scorer [P14T] keep apart:
# ``poss-`` removal (2014T has ``poss-SEIN`` next to ``SEIN``...), ``HABEN2 -> HABEN`` and
# ``S0NNE -> SONNE`` (both are Phoenix-2014T glosses) -- all three [P14] only.

_MARKER = re.compile(r"^__[^_\s]*__$")  # __ON__ __OFF__ __EMOTION__ __PU__ __LEFTHAND__
#   __EPENTHESIS__ ...: removed by [P14T] (r"\b__[^_ ]*__\b") and, the ones it lists, by [P14]
_PREFIX = re.compile(r"(?:^|(?<=[-+]))(?:loc|cl|qu|lh)-(?=[^-+])")  # loc- cl-: [P14] [P14T];
#   qu- lh-: [P14] (annotation prefixes; none in Phoenix-2014T or its gloss2ids)
_PLUSPLUS = re.compile(r"-plusplus(?=$|[-+])")  # "-PLUSPLUS" removed: [P14] [P14T]
_RAUM = re.compile(r"(?:^|(?<=[-+]))([a-z]+)raum(?=$|[-+])")  # XRAUM -> X: [P14T]
#   r"\b([A-Z][A-Z]*)RAUM\b" ([P14]: r"([A-Z][A-Z])RAUM"); a bare RAUM stays
_UMLAUTS = str.maketrans({"ä": "ae", "ö": "oe", "ü": "ue", "ß": "ss"})  # [G2I] spelling
_LETTER = re.compile(r"^[a-z]$")  # one fingerspelled letter (ASCII only: CSL-Daily glosses
#   are single Chinese characters, never merged)


@lru_cache(maxsize=1 << 16)
def _clean_token(token: str) -> str:
    """One gloss in canonical spelling ('' when the gloss is a marker to drop)."""
    # Lower case: [G2I]; NFC first so that a decomposed u + U+0308 is an umlaut too, and
    # casefold() also maps the sharp s to "ss" like [G2I] ("heiss").
    t = unicodedata.normalize("NFC", token).casefold().translate(_UMLAUTS)
    if _MARKER.match(t):
        return ""
    t = _PREFIX.sub("", t)
    t = _PLUSPLUS.sub("", t)
    t = _RAUM.sub(r"\1", t)
    if t == "zeigen":  # [P14]: s,ZEIGEN ,ZEIGEN-BILDSCHIRM ,g and s,ZEIGEN$,ZEIGEN-BILDSCHIRM,
        t = "zeigen-bildschirm"
    return t


def _spelled(left: str, right: str) -> bool:
    """Whether two neighbouring glosses are parts of one fingerspelled word: [P14]/[P14T]
    join `A B` -> `A+B` when the last '+'-piece of the left gloss is a single letter (or SCH
    or NN) and the first piece of the right one a single letter (or NN after a letter)."""
    last, first = left.rsplit("+", 1)[-1], right.split("+", 1)[0]
    if _LETTER.match(last):
        return bool(_LETTER.match(first)) or first == "nn"
    return last in ("sch", "nn") and bool(_LETTER.match(first))


def _normalize_once(tokens: list[str]) -> list[str]:
    out: list[str] = []
    for tok in (_clean_token(t) for t in tokens):
        if not tok:
            continue
        if out and out[-1] == "wie" and tok == "aussehen":  # [P14] [P14T]: WIE-AUSSEHEN
            out[-1] = "wie-aussehen"
        elif out and _spelled(out[-1], tok):  # fingerspelling: [P14] [P14T]
            out[-1] = out[-1] + "+" + tok
        else:
            out.append(tok)
    # Repetitions removed: [P14T] / [P14]'s Python port end with
    # " ".join(i[0] for i in groupby(prediction.split(" "))); [P14]'s perl rule does the same
    # for plain glosses.
    return [k for k, _ in itertools.groupby(out)]


@lru_cache(maxsize=1 << 16)
def normalize_gloss(seq: str) -> str:
    """The canonical form of a gloss sequence, for vocabulary, targets and scoring alike.

    Lower case with ``ue oe ae ss`` for ``ü ö ä ß``; markers (``__ON__``, ``__OFF__``,
    ``__EMOTION__``, ``__PU__``, ``__LEFTHAND__``, ``__EPENTHESIS__`` ...) dropped; the
    annotation prefixes ``loc- cl- qu- lh-`` and the suffix ``-PLUSPLUS`` removed; ``XRAUM``
    -> ``X``; ``ZEIGEN`` -> ``ZEIGEN-BILDSCHIRM``; ``WIE AUSSEHEN`` -> ``WIE-AUSSEHEN``;
    fingerspelled letters joined (``A B C`` -> ``a+b+c``); immediate repetitions collapsed;
    single spaces.  The rules are those of the official Phoenix evaluation (sources in the
    comments above); the rules run until nothing changes, so the function is idempotent.
    """
    tokens = seq.split()
    for _ in range(100):
        new = _normalize_once(tokens)
        if new == tokens:
            break
        tokens = new
    else:  # pragma: no cover - every rule shortens or settles a token
        raise RuntimeError(f"gloss normalisation does not settle on {seq!r}")
    return " ".join(tokens)


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------

_TYPE_WORDS = {str: "a string", int: "an integer"}


def _entry(index: int, name: Any = None, line: int | None = None) -> str:
    where = f"entry {index}"
    if line is not None:
        where += f" (line {line}"
        where += f", name {name!r})" if isinstance(name, str) else ")"
    elif isinstance(name, str):
        where += f" ({name!r})"
    return where


def _check(path: Any, where: str, entry: dict[str, Any], key: str, kind: type,
           required: bool) -> Any:
    """entry[key] checked against ``kind`` (None allowed when not required)."""
    if key not in entry:
        if required:
            raise DataError(f"annotation file {path}: {where}: missing key {key!r} "
                            f"(expected {_TYPE_WORDS[kind]})")
        return None
    value = entry[key]
    if value is None and not required:
        return None
    ok = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
    if ok and kind is int and value < 0:
        ok = False
    if ok and kind is str and key == "name" and not value.strip():
        ok = False
    if not ok:
        expected = _TYPE_WORDS[kind] + (" >= 0" if kind is int else "")
        expected += " (not empty)" if key == "name" else ""
        raise DataError(f"annotation file {path}: {where}: key {key!r} is "
                        f"{_short(value)}, expected {expected}")
    return value


def _short(value: Any) -> str:
    return f"{type(value).__name__} {short_repr(value, 60)}"


def _unique(path: Any, samples: list[SignSample], where: Sequence[str]) -> list[SignSample]:
    if not samples:
        raise DataError(f"annotation file {path}: contains no entries")
    seen: dict[str, int] = {}
    for i, s in enumerate(samples):
        if s.name in seen:
            raise DataError(f"annotation file {path}: {where[i]}: duplicate name "
                            f"(also entry {seen[s.name]})")
        seen[s.name] = i
    return samples


def _from_pickle(path: Any, raw: bytes) -> list[SignSample]:
    data = loads_pickle(raw, path)
    if not isinstance(data, (list, tuple)):
        raise DataError(f"annotation file {path}: holds {type(data).__name__}, expected a "
                        "list of dicts (SLRT format)")
    if not data:
        raise DataError(f"annotation file {path}: contains no entries")
    first = data[0]
    phoenix2014 = isinstance(first, dict) and "folder" in first and "text" not in first
    samples, where = [], []
    for i, e in enumerate(data):
        name = e.get("name") if isinstance(e, dict) else None
        w = _entry(i, name)
        if not isinstance(e, dict):
            raise DataError(f"annotation file {path}: {w}: is {_short(e)}, expected a dict")
        name = _check(path, w, e, "name", str, True)
        if phoenix2014:
            samples.append(SignSample(
                name=name, gloss=_check(path, w, e, "gloss", str, True), text=None,
                signer=_check(path, w, e, "signer", str, True),
                num_frames=_check(path, w, e, "num_frames", int, True),
                video=_check(path, w, e, "folder", str, True)))
        else:
            samples.append(SignSample(
                name=name, gloss=_check(path, w, e, "gloss", str, True),
                text=_check(path, w, e, "text", str, True),
                signer=_check(path, w, e, "signer", str, False),
                num_frames=_check(path, w, e, "num_frames", int, True)))
        where.append(w)
    return _unique(path, samples, where)


_JSONL_KEYS = {"name": str, "video": str, "gloss": str, "text": str, "signer": str,
               "num_frames": int}


def _from_jsonl(path: Any, text: str) -> list[SignSample]:
    samples, where = [], []
    # lines end at "\n" only: str.splitlines() would also split at U+0085, U+2028 ...,
    # which JSON strings may hold unescaped
    for line_no, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        i = len(samples)
        try:
            e = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"annotation file {path}: {_entry(i, line=line_no)}: not valid "
                            f"JSON ({err.msg} at column {err.colno})") from None
        if not isinstance(e, dict):
            raise DataError(f"annotation file {path}: {_entry(i, line=line_no)}: is "
                            f"{_short(e)}, expected a JSON object")
        w = _entry(i, e.get("name"), line_no)
        unknown = sorted(set(e) - set(_JSONL_KEYS))
        if unknown:
            raise DataError(f"annotation file {path}: {w}: unknown key {unknown[0]!r} "
                            f"(expected keys: {', '.join(_JSONL_KEYS)})")
        values = {k: _check(path, w, e, k, kind, k == "name") for k, kind in _JSONL_KEYS.items()}
        if all(values[k] is None for k in ("video", "gloss", "text")):
            raise DataError(f"annotation file {path}: {w}: needs at least one of the keys "
                            "'video', 'gloss', 'text' (expected a string)")
        samples.append(SignSample(**values))
        where.append(w)
    return _unique(path, samples, where)


_CSV_LAYOUTS = {  # header -> column of each SignSample field
    ("name", "video", "start", "end", "speaker", "orth", "translation"):
        {"name": "name", "video": "video", "signer": "speaker", "gloss": "orth",
         "text": "translation"},
    ("id", "folder", "signer", "annotation"):  # Phoenix-2014 corpus CSVs
        {"name": "id", "video": "folder", "signer": "signer", "gloss": "annotation"},
}


def _split_of(video: str, file_name: str) -> str | None:
    """train/dev/test from a Phoenix video column (``train/<name>/1/*.png`` or
    ``fullFrame-210x260px/train/...``) or from the file name (``*.train.corpus.csv``)."""
    parts = PurePosixPath(video).parts
    for p in parts[:2]:
        if p in ("train", "dev", "test"):
            return p
    for p in file_name.split("."):
        if p in ("train", "dev", "test"):
            return p
    return None


def _from_csv(path: Any, text: str) -> list[SignSample]:
    first_line = text.split("\n", 1)[0]
    header = tuple(c.strip() for c in first_line.split("|"))
    layout = _CSV_LAYOUTS.get(header)
    if layout is None:
        expected = " or ".join(repr("|".join(h)) for h in _CSV_LAYOUTS)
        raise DataError(f"annotation file {path}: unknown CSV header "
                        f"{first_line.strip()!r} (expected {expected})")
    samples, where = [], []
    rows = csv.reader(io.StringIO(text), delimiter="|", quoting=csv.QUOTE_NONE, strict=True)
    next(rows)
    for row in rows:
        line_no = rows.line_num
        if not any(c.strip() for c in row):
            continue
        i = len(samples)
        if len(row) != len(header):
            raise DataError(f"annotation file {path}: {_entry(i, row[0], line_no)}: has "
                            f"{len(row)} fields, expected {len(header)} ({'|'.join(header)})")
        cells = dict(zip(header, (c.strip() for c in row)))
        w = _entry(i, cells[layout["name"]], line_no)
        for field, column in layout.items():
            if not cells[column]:
                raise DataError(f"annotation file {path}: {w}: column {column!r} is empty "
                                "(expected a string)")
        name, video = cells[layout["name"]], cells[layout["video"]]
        split = _split_of(video, os.path.basename(str(path)))
        if split is not None and not name.startswith(split + "/"):
            name = f"{split}/{name}"
        samples.append(SignSample(name=name, gloss=" ".join(cells[layout["gloss"]].split()),
                                  text=cells[layout["text"]] if "text" in layout else None,
                                  signer=cells[layout["signer"]], video=video))
        where.append(w)
    return _unique(path, samples, where)


def load_annotations(path: str | os.PathLike[str]) -> list[SignSample]:
    """Read an annotation file in any of the formats of the module docstring (detected from
    its content) into one `SignSample` per video, in file order."""
    raw = read_maybe_gzip(path, "annotation file")
    if not raw.strip():
        raise DataError(f"annotation file {path}: is empty")
    if raw[:1] == b"\x80":  # pickle protocol >= 2 (gzip is already undone)
        return _from_pickle(path, raw)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = None
    if text is not None and text.lstrip().startswith("{"):
        return _from_jsonl(path, text)
    if text is not None and "|" in text.lstrip().split("\n", 1)[0]:
        return _from_csv(path, text.lstrip())
    try:  # protocol 0/1 pickles have no header; a refused global is reported as such
        return _from_pickle(path, raw)
    except PickleUnreadable:
        pass
    raise DataError(f"annotation file {path}: unknown format (expected an SLRT pickle, a "
                    "Phoenix corpus CSV or JSON lines)")


# --------------------------------------------------------------------------------------------
# Vocabulary
# --------------------------------------------------------------------------------------------

def _gloss2ids_glosses(path: str | os.PathLike[str]) -> list[str]:
    table = load_pickle(path, "gloss vocabulary")
    if not isinstance(table, dict) or not table:
        raise DataError(f"gloss vocabulary {path}: holds {type(table).__name__}, expected a "
                        "non-empty dict gloss -> id (SLRT gloss2ids.pkl)")
    for k, v in table.items():
        if not isinstance(k, str) or isinstance(v, bool) or not isinstance(v, int):
            raise DataError(f"gloss vocabulary {path}: entry {k!r}: {v!r}, expected a "
                            "string mapped to an integer id")
    ordered = sorted(table, key=lambda k: table[k])
    return [k for k in ordered if k not in GLOSS2IDS_SPECIALS and not _LANGUAGE_CODE.match(k)]


def gloss_vocabulary(train: Iterable[SignSample],
                     gloss2ids_path: str | os.PathLike[str] | None = None) -> Vocabulary:
    """Gloss vocabulary for CTC: blank at id 0, the glosses, ``<unk>`` last; joiner ' '.

    With ``gloss2ids_path`` the glosses are those of SLRT's ``gloss2ids.pkl`` in its id order,
    without its special and language tokens, normalised (`normalize_gloss`; glosses that
    become equal keep the first id).  Without it they are the sorted normalised glosses of
    ``train``, which must be the training split only: samples named ``dev/...`` or
    ``test/...`` are refused (a vocabulary pruned with test data inflates the results).
    """
    if gloss2ids_path is not None:
        raw = _gloss2ids_glosses(gloss2ids_path)
        glosses = list(dict.fromkeys(t for g in raw for t in normalize_gloss(g).split()))
        if not glosses:
            raise DataError(f"gloss vocabulary {gloss2ids_path}: has no glosses besides "
                            "its special tokens")
    else:
        found: set[str] = set()
        for s in train:
            if s.name.split("/", 1)[0] in ("dev", "test"):
                raise DataError(f"gloss vocabulary: sample {s.name!r} is not from the training "
                                "split; build the vocabulary from the training split only")
            if s.gloss is not None:
                found.update(normalize_gloss(s.gloss).split())
        if not found:
            raise DataError("gloss vocabulary: the training samples have no glosses")
        glosses = sorted(found)
    glosses = [g for g in glosses if g not in (BLANK, UNK)]
    return Vocabulary((BLANK, *glosses, UNK), joiner=" ", unk=UNK)


def oov_rate(samples: Iterable[SignSample], vocab: Vocabulary) -> float:
    """Percentage of the (normalised) gloss tokens of ``samples`` not in ``vocab``
    (the blank and the unk token count as out of vocabulary); 0.0 without glosses."""
    known = set(vocab.tokens) - {BLANK, vocab.unk}
    total = missing = 0
    for s in samples:
        if s.gloss is None:
            continue
        for tok in normalize_gloss(s.gloss).split():
            total += 1
            missing += tok not in known
    return 100.0 * missing / total if total else 0.0
