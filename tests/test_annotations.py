"""Sign language annotations: safe unpickling, the formats, gloss normalisation, vocabulary."""
from __future__ import annotations

import gzip
import json
import os
import pickle
import pickletools
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dataset.annotations import (SignSample, gloss_vocabulary, load_annotations,
                                 normalize_gloss, oov_rate)
from dataset.vocab import BLANK, Vocabulary
from utils.errors import DataError
from utils.safe_pickle import load_pickle

PHOENIX = Path(os.environ.get("PHOENIX2014T_DIR", "/work/shared/data/phoenix-2014t"))
needs_phoenix = pytest.mark.skipif(not (PHOENIX / "phoenix-2014t.train").exists(),
                                   reason="Phoenix-2014T annotations not available")
SPLITS = {"train": 7096, "dev": 519, "test": 642}


def one_error(excinfo: pytest.ExceptionInfo, *parts: str) -> str:
    """The DataError's message: one line containing every part."""
    msg = str(excinfo.value)
    assert "\n" not in msg, msg
    for p in parts:
        assert p in msg, (p, msg)
    return msg


# --------------------------------------------------------------------------------------------
# The real Phoenix-2014T files
# --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def phoenix() -> dict[str, list[SignSample]]:
    return {s: load_annotations(PHOENIX / f"phoenix-2014t.{s}") for s in SPLITS}


@needs_phoenix
def test_phoenix_files_load(phoenix):
    for split, n in SPLITS.items():
        samples = phoenix[split]
        assert len(samples) == n
        for s in samples:
            assert s.name.startswith(split + "/")
            assert isinstance(s.gloss, str) and s.gloss.strip()
            assert isinstance(s.text, str) and s.text.endswith(" .")
            assert isinstance(s.signer, str) and isinstance(s.num_frames, int)
            assert s.video is None
    first = phoenix["train"][0]
    assert first.name == "train/11August_2010_Wednesday_tagesschau-1"


@needs_phoenix
def test_phoenix_vocabularies_and_oov(phoenix):
    table = load_pickle(PHOENIX / "gloss2ids.pkl")
    assert isinstance(table, dict) and len(table) == 1124
    # the plain lower-cased glosses are all in gloss2ids.pkl
    for samples in phoenix.values():
        assert all(g.lower() in table for s in samples for g in s.gloss.split())

    vocab = gloss_vocabulary(phoenix["train"], PHOENIX / "gloss2ids.pkl")
    assert vocab.tokens[0] == BLANK and vocab.tokens[-1] == "<unk>" and vocab.unk == "<unk>"
    assert vocab.joiner == " "
    # gloss2ids order without its 9 special / language tokens (<s> ... zh_CSL de_DGS)
    assert vocab.tokens[1:4] == ("jetzt", "wetter", "morgen")
    assert len(vocab) == 1 + 1124 - 9 + 1
    assert not {"<s>", "<pad>", "</s>", "<mask>", "de_DE", "de_DGS"} & set(vocab.tokens)
    for samples in phoenix.values():
        assert oov_rate(samples, vocab) == 0.0

    from_train = gloss_vocabulary(phoenix["train"])
    assert list(from_train.tokens[1:-1]) == sorted(from_train.tokens[1:-1])
    assert oov_rate(phoenix["train"], from_train) == 0.0
    assert 0.0 < oov_rate(phoenix["dev"], from_train) < 1.0
    assert 0.0 < oov_rate(phoenix["test"], from_train) < 1.0
    ids = from_train.encode(phoenix["dev"][0].target_gloss)
    assert from_train.decode(ids) == phoenix["dev"][0].target_gloss
    with pytest.raises(DataError) as e:
        gloss_vocabulary(phoenix["train"] + phoenix["dev"][:1])
    one_error(e, "dev/", "training split")


# --------------------------------------------------------------------------------------------
# Pickles that would run code
# --------------------------------------------------------------------------------------------

class _RunsCode:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _write(path: Path, data: bytes, compress: bool = False) -> Path:
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize("protocol", [0, 2, 4])
def test_code_running_pickle_is_refused(tmp_path, compress, protocol):
    marker = tmp_path / "marker"
    payload = [{"name": "train/x", "gloss": "A", "text": "a .", "num_frames": 1,
                "sign": _RunsCode(marker)}]
    path = _write(tmp_path / "evil.train", pickle.dumps(payload, protocol=protocol), compress)
    qualified = f"{os.system.__module__}.system"  # posix.system
    for load in (load_annotations, load_pickle):
        with pytest.raises(DataError) as e:
            load(path)
        one_error(e, str(path), f"refused to load '{qualified}'",
                  "only plain data and tensors are allowed")
    assert not marker.exists()


def test_getattr_only_for_torch_zeros(tmp_path):
    # getattr('abc', 'upper')(): a getattr that is not the demo corpora's torch.zeros
    raw = b"cbuiltins\ngetattr\n(S'abc'\nS'upper'\ntR)R."
    with pytest.raises(DataError) as e:
        load_pickle(_write(tmp_path / "a.pkl", raw))
    one_error(e, "refused to load", "builtins.getattr(str, 'upper')")
    raw = b"cbuiltins\ngetattr\n(ctorch._C\n_VariableFunctionsClass\nS'ones'\ntR."
    with pytest.raises(DataError) as e:
        load_pickle(_write(tmp_path / "b.pkl", raw))
    one_error(e, "refused to load", "'ones'")
    for name in ("eval", "exec", "__import__", "open"):
        with pytest.raises(DataError) as e:
            load_pickle(_write(tmp_path / "c.pkl", f"cbuiltins\n{name}\n.".encode()))
        one_error(e, f"refused to load 'builtins.{name}'")


def test_code_inside_a_tensor_storage_is_refused(tmp_path):
    """The storage bytes of a pickled tensor are read with torch.load(weights_only=True)."""
    marker = tmp_path / "marker"

    class EvilStorage:
        def __reduce__(self):
            return torch.storage._load_from_bytes, (pickle.dumps(_RunsCode(marker)),)

    path = _write(tmp_path / "evil.pkl", pickle.dumps([EvilStorage()]), compress=True)
    with pytest.raises(DataError) as e:
        load_pickle(path)
    one_error(e, str(path), "not a readable pickle")
    assert not marker.exists()


def test_huge_placeholder_tensor_is_refused(tmp_path):
    class Huge:
        def __reduce__(self):
            return torch.zeros, ((1 << 40,),)

    with pytest.raises(DataError) as e:
        load_pickle(_write(tmp_path / "huge.pkl", pickle.dumps(Huge())))
    one_error(e, "huge.pkl", "placeholder tensor")


def test_real_tensor_pickle_loads(tmp_path):
    obj = {"t": torch.arange(6, dtype=torch.float32).reshape(2, 3), "e": torch.empty(0),
           "s": {1, 2}, "f": frozenset({"a"}), "c": 1 + 2j}
    back = load_pickle(_write(tmp_path / "t.pkl", pickle.dumps(obj), compress=True))
    assert torch.equal(back["t"], obj["t"]) and back["e"].numel() == 0
    assert back["s"] == {1, 2} and back["f"] == frozenset({"a"}) and back["c"] == 1 + 2j


# --------------------------------------------------------------------------------------------
# Broken files: one DataError each, naming the file and the problem
# --------------------------------------------------------------------------------------------

def _entry(**over):
    e = {"name": "train/v1", "signer": "Signer01", "gloss": "HEUTE REGEN",
         "text": "heute regnet es .", "num_frames": 12, "sign": torch.empty(0),
         "alignments": {}}
    e.update(over)
    return {k: v for k, v in e.items() if v is not _MISSING}


_MISSING = object()


def _slrt(path: Path, entries) -> Path:
    return _write(path, pickle.dumps(entries, protocol=4), compress=True)


@pytest.mark.parametrize("over, parts", [
    ({"text": _MISSING}, ["entry 1 ('train/v2')", "missing key 'text'", "expected a string"]),
    ({"num_frames": "12"}, ["entry 1 ('train/v2')", "key 'num_frames' is str '12'",
                            "expected an integer >= 0"]),
    ({"num_frames": True}, ["entry 1", "key 'num_frames' is bool True"]),
    ({"gloss": None}, ["entry 1", "key 'gloss' is NoneType None", "expected a string"]),
    ({"signer": 3}, ["entry 1", "key 'signer' is int 3"]),
    ({"name": "train/v1"}, ["entry 1 ('train/v1')", "duplicate name", "entry 0"]),
])
def test_bad_entries(tmp_path, over, parts):
    path = _slrt(tmp_path / "bad.train", [_entry(), _entry(**{"name": "train/v2", **over})])
    with pytest.raises(DataError) as e:
        load_annotations(path)
    one_error(e, str(path), *parts)


@pytest.mark.parametrize("content, parts", [
    (b"", ["is empty"]),
    (b"  \n\n", ["is empty"]),
    (gzip.compress(b""), ["is empty"]),
    (pickle.dumps([], protocol=4), ["contains no entries"]),
    (pickle.dumps({"a": 1}, protocol=4), ["holds dict", "expected a list of dicts"]),
    (pickle.dumps(["x"], protocol=4), ["entry 0", "is str 'x'", "expected a dict"]),
    (b"hello world\n", ["unknown format"]),
    (pickle.dumps([_entry()], protocol=4)[:-40], ["not a readable pickle"]),
])
def test_bad_files(tmp_path, content, parts):
    path = _write(tmp_path / "bad.pkl", content)
    with pytest.raises(DataError) as e:
        load_annotations(path)
    one_error(e, str(path), *parts)


def test_truncated_gzip(tmp_path):
    full = gzip.compress(pickle.dumps([_entry(name=f"train/v{i}") for i in range(200)]))
    for cut in (len(full) // 2, len(full) - 5, 11):
        path = _write(tmp_path / f"cut{cut}.train", full[:cut])
        for load in (load_annotations, load_pickle):
            with pytest.raises(DataError) as e:
                load(path)
            one_error(e, str(path), "truncated")


def test_missing_file(tmp_path):
    with pytest.raises(DataError) as e:
        load_annotations(tmp_path / "nope.train")
    one_error(e, "nope.train", "cannot read")


def test_bad_text_formats(tmp_path):
    cases = {
        "a.jsonl": ('{"name": "x", "gloss": "A"}\n{"name": "y", "glos": "B"}\n',
                    ["entry 1 (line 2, name 'y')", "unknown key 'glos'"]),
        "b.jsonl": ('{"name": "x", "gloss": "A"}\n\n{"name": "y", "gloss": "B",\n',
                    ["entry 1 (line 3)", "not valid JSON"]),
        "c.jsonl": ('{"name": "x", "signer": "S1"}\n', ["entry 0", "needs at least one"]),
        "d.jsonl": ('{"gloss": "A"}\n', ["entry 0 (line 1)", "missing key 'name'"]),
        "e.jsonl": ('{"name": "x", "gloss": "A", "num_frames": -3}\n',
                    ["key 'num_frames' is int -3", "expected an integer >= 0"]),
        "f.csv": ("name|video|start|end|speaker|orth|translation\n"
                  "v1|train/v1/1/*.png|-1|-1|Signer01|A B\n",
                  ["entry 0 (line 2, name 'v1')", "has 6 fields, expected 7"]),
        "g.csv": ("name|video|speaker|orth\nv1|x|S|A\n", ["unknown CSV header"]),
        "h.csv": ("name|video|start|end|speaker|orth|translation\n"
                  "v1|train/v1/1/*.png|-1|-1|Signer01||text\n", ["column 'orth' is empty"]),
    }
    for name, (text, parts) in cases.items():
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        with pytest.raises(DataError) as e:
            load_annotations(path)
        one_error(e, str(path), *parts)


# --------------------------------------------------------------------------------------------
# The same annotations in the three formats
# --------------------------------------------------------------------------------------------

ROWS = [
    ("train/11August_2010_Wednesday_tagesschau-1", "Signer08", "JETZT WETTER MORGEN DONNERSTAG",
     "und nun die wettervorhersage für morgen donnerstag den zwölften august .", 176),
    ("train/11August_2010_Wednesday_tagesschau-4", "Signer08", "ORT REGEN DURCH REGEN",
     "mancherorts regnet es auch länger und ergiebig .", 99),
    ("train/11August_2010_Wednesday_tagesschau-5", "Signer01", "poss-SEIN IX neg-HABEN",
     "sonst überall trocken .", 7),
]


def test_csv_and_jsonl_match_the_pickle(tmp_path):
    entries = [{"name": n, "signer": s, "gloss": g, "text": t, "num_frames": f,
                "sign": torch.empty(0), "alignments": {"a": "1 2"}} for n, s, g, t, f in ROWS]
    from_pickle = load_annotations(_slrt(tmp_path / "phoenix-2014t.train", entries))

    lines = ["name|video|start|end|speaker|orth|translation"]
    for n, s, g, t, _ in ROWS:
        bare = n.split("/", 1)[1]
        lines.append(f"{bare}|train/{bare}/1/*.png|-1|-1|{s}|{g}|{t}")
    csv_path = tmp_path / "PHOENIX-2014-T.train.corpus.csv"
    csv_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    from_csv = load_annotations(csv_path)

    jsonl = tmp_path / "train.jsonl"
    jsonl.write_text("".join(json.dumps({"name": n, "signer": s, "gloss": g, "text": t,
                                         "num_frames": f}, ensure_ascii=False) + "\n"
                             for n, s, g, t, f in ROWS), encoding="utf-8")
    from_jsonl = load_annotations(jsonl)

    assert from_jsonl == from_pickle
    key = lambda s: (s.name, s.gloss, s.text, s.signer)  # noqa: E731 - the CSV has no frame count
    assert [key(s) for s in from_csv] == [key(s) for s in from_pickle]
    assert [s.video for s in from_csv] == [f"train/{n.split('/', 1)[1]}/1/*.png"
                                           for n, *_ in ROWS]
    assert all(s.num_frames is None for s in from_csv)
    # plain (not gzip) pickle too
    plain = _write(tmp_path / "plain.train", pickle.dumps(entries, protocol=2))
    assert load_annotations(plain) == from_pickle


def test_phoenix2014_pickle_format(tmp_path):
    entries = [{"name": "01April_2010_Thursday_heute_default-0",
                "folder": "fullFrame-210x260px/train/01April_2010_Thursday_heute_default-0/1/*.png",
                "signer": "Signer04", "gloss": "__ON__ LIEB ZUSCHAUER ABEND __OFF__",
                "num_frames": 176}]
    (s,) = load_annotations(_slrt(tmp_path / "phoenix2014.train", entries))
    assert s.text is None and s.video == entries[0]["folder"] and s.num_frames == 176
    assert s.target_gloss == "lieb zuschauer abend"
    bad = [dict(entries[0], name="b")]
    del bad[0]["folder"]
    with pytest.raises(DataError) as e:
        load_annotations(_slrt(tmp_path / "p2.train", entries + bad))
    one_error(e, "entry 1 ('b')", "missing key 'folder'")


# --------------------------------------------------------------------------------------------
# The demo corpus of dataset.synthetic (its placeholder tensor is pickled as torch.zeros)
# --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def demo_sign(tmp_path_factory) -> Path:
    from dataset.synthetic import generate

    return generate(tmp_path_factory.mktemp("demo"), only=["sign"], scale=0.05, log=None)["sign"]


def test_demo_files_load(demo_sign):
    raw = gzip.decompress((demo_sign / "sign.train").read_bytes())
    globals_ = [a for op, a, _ in pickletools.genops(raw) if op.name == "SHORT_BINUNICODE"]
    assert "_VariableFunctionsClass" in globals_  # the torch.zeros spelling, not the rebuild
    vocab = gloss_vocabulary([], demo_sign / "gloss2ids.pkl")
    for split in ("train", "dev", "test"):
        samples = load_annotations(demo_sign / f"sign.{split}")
        assert samples and all(s.name.startswith(split + "/") and s.gloss and s.text
                               for s in samples)
        assert oov_rate(samples, vocab) == 0.0
    table = load_pickle(demo_sign / "sign.dev")
    assert table[0]["sign"].shape == (0,) and table[0]["sign"].dtype == torch.float32


# --------------------------------------------------------------------------------------------
# Gloss normalisation and the vocabulary
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("raw, expected", [
    ("JETZT WETTER MORGEN", "jetzt wetter morgen"),
    ("__ON__ REGEN __EMOTION__ SONNE __PU__ __LEFTHAND__ __EPENTHESIS__ __OFF__", "regen sonne"),
    ("loc-NORD cl-KOMMEN qu-WAS lh-HAND", "nord kommen was hand"),
    ("poss-SEIN neg-HABEN negalp-AUCH HABEN2 S0NNE",
     "poss-sein neg-haben negalp-auch haben2 s0nne"),
    ("ÜBERSCHWEMMUNG FÜNF HEIß KÖNNEN NÄCHSTE",
     "ueberschwemmung fuenf heiss koennen naechste"),
    ("UEBERSCHWEMMUNG", "ueberschwemmung"),
    ("REGEN-PLUSPLUS WALDRAUM RAUM", "regen wald raum"),
    ("WIE AUSSEHEN ZEIGEN", "wie-aussehen zeigen-bildschirm"),
    ("IX A B C REGEN", "ix a+b+c regen"),
    ("SCH H E+R NN A", "sch+h+e+r+nn+a"),
    ("neg-EINFLUSS neg-EINFLUSS WIE-IMMER WIE-IMMER X", "neg-einfluss wie-immer x"),
    ("REGEN __OFF__ REGEN", "regen"),
    ("  A  ", "a"),
    ("", ""),
    ("今天 天 气 好", "今天 天 气 好"),
])
def test_normalize_gloss_rules(raw, expected):
    assert normalize_gloss(raw) == expected
    assert normalize_gloss(expected) == expected


_GLOSS_PIECES = st.sampled_from([
    "A", "B", "e", "SCH", "NN", "REGEN", "regen", "WIE", "AUSSEHEN", "ZEIGEN", "__ON__",
    "__OFF__", "__EMOTION__", "loc-", "cl-", "lh-", "poss-", "-PLUSPLUS", "RAUM", "WALDRAUM",
    "+", "-", "Ü", "ü", "ß", "ẞ", "U\u0308", "İ", "天", " ", "  ", "\t", "_",
])


@settings(max_examples=400, deadline=None)
@given(st.lists(st.one_of(_GLOSS_PIECES, st.text(max_size=4)), max_size=12).map("".join))
def test_normalize_gloss_is_idempotent(seq):
    once = normalize_gloss(seq)
    assert normalize_gloss(once) == once
    assert once == " ".join(once.split())


_TEXT = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=20)
_RECORD = st.fixed_dictionaries(
    {"name": _TEXT.filter(str.strip)},
    optional={"video": st.none() | _TEXT, "gloss": st.none() | _TEXT, "text": st.none() | _TEXT,
              "signer": st.none() | _TEXT, "num_frames": st.none() | st.integers(0, 10**6)},
).filter(lambda r: any(r.get(k) is not None for k in ("video", "gloss", "text")))


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(_RECORD, min_size=1, max_size=6, unique_by=lambda r: r["name"]),
       st.booleans())
def test_jsonl_round_trip(tmp_path, records, ascii_only):
    path = tmp_path / "random.jsonl"
    path.write_text("\n".join(json.dumps(r, ensure_ascii=ascii_only) for r in records) + "\n",
                    encoding="utf-8")
    assert load_annotations(path) == [SignSample(**r) for r in records]


def test_vocabulary_unk():
    vocab = Vocabulary((BLANK, "a", "b", "<unk>"), joiner=" ", unk="<unk>")
    assert vocab.encode("a zz b <blank>") == [1, 3, 2, 3]
    assert Vocabulary.from_state(vocab.to_state()) == vocab
    plain = Vocabulary((BLANK, "a", "b"), joiner=" ")
    assert plain.to_state() == {"tokens": [BLANK, "a", "b"], "joiner": " "}
    assert Vocabulary.from_state({"tokens": [BLANK, "a", "b"], "joiner": " "}) == plain
    with pytest.raises(DataError):
        plain.encode("a zz", where="x")
    with pytest.raises(ValueError):
        Vocabulary((BLANK, "a"), joiner=" ", unk="<unk>")
    with pytest.raises(ValueError):
        Vocabulary((BLANK, "a"), joiner=" ", unk=BLANK)


def test_train_vocabulary_is_sorted_and_normalised():
    train = [SignSample("train/1", gloss="REGEN ÜBER __ON__"),
             SignSample("train/2", gloss="A B"), SignSample("train/3", text="no gloss")]
    vocab = gloss_vocabulary(train)
    assert vocab.tokens == (BLANK, "a+b", "regen", "ueber", "<unk>")
    dev = [SignSample("dev/1", gloss="REGEN UEBER SCHNEE SCHNEE")]
    assert oov_rate(dev, vocab) == pytest.approx(100 / 3)
    assert vocab.encode(dev[0].target_gloss) == [2, 3, 4]
