"""Synthetic demo corpora: small, learnable stand-ins for GRID, Phoenix-2014T and LRW.

``python -m dataset.synthetic`` writes three corpora under ``data/demo/`` (``--out`` changes
the root).  They are real files in the real on-disk formats, so the toolkit reads them with the
same readers as the real datasets.  Every unit of the vocabulary (character, gloss, word) has a
fixed visual pattern a small network can learn, plus nuisance variation (per-speaker tint,
brightness/contrast, Gaussian noise, small random shifts) so the task is not trivial.
All videos are RGB (``decord`` returns ``(T, H, W, 3)`` uint8 in RGB order), 25 fps.

grid/  GRID-style sentence lip reading (speakers ``s1``..``s4``, "overlapped" split).
    ``videos/<spk>/<id>.mpg``  MPEG-1 (container ``mpeg``), 75 frames, 64 high x 128 wide.
    ``align/<spk>/align/<id>.align``  GRID alignments ``start end word`` (1 frame = 1000 units,
    segments contiguous over 0..75000, ``sil`` first and last, ``sp`` between words).
    ``train.txt`` / ``dev.txt`` / ``test.txt``  one ``<spk>/<id>`` per line.
    The video spells the sentence: each character of ``' ' + a..z`` is a fixed 4x8 grid of
    coloured blocks shown for 2-3 frames; two identical neighbouring letters ("gr-ee-n") are
    separated by one neutral frame.  Each ``sp`` gap shows the space pattern for 1-2 frames,
    sometimes followed by a neutral frame; ``sil`` shows the neutral "closed mouth" frame
    (grey with a dark horizontal lip band).
sign/  Phoenix-2014T style sign language translation (German weather forecasts).
    ``videos/<split>/<id>.mp4``  H.264 (libx264, yuv420p), 128 high x 104 wide.
    ``sign.train`` / ``sign.dev`` / ``sign.test``  gzip-compressed pickles of a list of dicts
    with the Phoenix-2014T keys ``name signer gloss text sign num_frames alignments``;
    ``alignments['demo']`` gives one gloss id per frame (0 = neutral frame).
    ``gloss2ids.pkl``  gloss -> id, the 8 special tokens first as in the real file.
    A signer (torso, head, background colours) holds both hands at rest in neutral frames; a
    gloss is a coloured hand of a gloss-specific colour and shape (each shape its own size) moving
    along a gloss-specific curve for 6-9 frames while the other hand rests at a gloss-specific place.
lrw/lipread_mp4/  LRW-style isolated words.
    ``<WORD>/{train,val,test}/<WORD>_00001.mp4``  H.264, 29 frames, 96x96, and
    ``<WORD>_00001.txt``  ``Text:  WORD`` / ``Conf:  4`` / ``Duration: 0.44 seconds``.
    A lower face: the mouth (an ellipse: lips, dark opening, optional teeth) follows a
    word-specific sequence of mouth shapes (visemes) centred in the clip, neutral outside;
    contrast lives in luminance, so grayscale models can learn it.

A corpus directory is built in ``<dir>.tmp`` and renamed into place; its ``.complete`` marker
(JSON: generator version, seed, scale) is written last, and a complete corpus with the same
marker is skipped.  The same seed gives byte-identical files.
"""

from __future__ import annotations

import argparse
import copyreg
import gzip
import json
import os
import pickle
import shutil
import sys
import time
from dataclasses import dataclass
from functools import lru_cache
from multiprocessing import Pool
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import av
import numpy as np

GENERATOR_VERSION = "2"
CORPORA = ("grid", "sign", "lrw")
DEFAULT_OUT = Path("data/demo")
FPS = 25
MARKER = ".complete"

_CORPUS_CODES = {"grid": 1, "sign": 2, "lrw": 3}
# Fixed seed of the visual "language" (patterns per character / gloss): independent of --seed,
# so a character looks the same in every generated corpus.
_PATTERN_SEED = 20240611

# --------------------------------------------------------------------------------------------
# Shared helpers: RNG, nuisance, video encoding, parallel map
# --------------------------------------------------------------------------------------------


def sample_rng(seed: int, corpus: str, index: int) -> np.random.Generator:
    """RNG of one sample, derived only from (seed, corpus, index)."""
    return np.random.default_rng([seed, _CORPUS_CODES[corpus], index])


def scaled(count: int, scale: float) -> int:
    """``count * scale`` rounded, at least 1."""
    return max(1, int(round(count * scale)))


def random_shifts(rng: np.random.Generator, num_frames: int, max_shift: int) -> np.ndarray:
    """Per-frame (dy, dx): a per-video offset plus +-1 px jitter, clipped to +-max_shift."""
    base = rng.integers(-max_shift, max_shift + 1, size=2)
    jitter = rng.integers(-1, 2, size=(num_frames, 2))
    return np.clip(base + jitter, -max_shift, max_shift)


def shift_frames(frames: np.ndarray, shifts: np.ndarray) -> np.ndarray:
    """Translate each frame of (T, H, W, C) by its (dy, dx), replicating the border."""
    m = int(np.abs(shifts).max(initial=0))
    if m == 0:
        return frames
    _, h, w, _ = frames.shape
    padded = np.pad(frames, ((0, 0), (m, m), (m, m), (0, 0)), mode="edge")
    out = np.empty_like(frames)
    for t, (dy, dx) in enumerate(shifts):
        out[t] = padded[t, m - dy : m - dy + h, m - dx : m - dx + w]
    return out


@lru_cache(maxsize=4)
def _noise_bank(std: float) -> np.ndarray:
    """A fixed block of Gaussian noise (std ``std``); videos add random slices of it."""
    rng = np.random.default_rng(_PATTERN_SEED + 7)
    return rng.standard_normal(1 << 22, dtype=np.float32) * np.float32(std)


def finish_frames(frames: np.ndarray, rng: np.random.Generator, gain: Sequence[float],
                  offset: float, noise_std: float) -> np.ndarray:
    """Per-channel gain, brightness offset and Gaussian noise on (T, H, W, 3) frames;
    returns them rounded to uint8 (works in place on contiguous float32 input)."""
    frames = np.ascontiguousarray(frames, dtype=np.float32)
    t, h, w, c = frames.shape
    rows = frames.reshape(t * h, w * c)  # long rows: fast broadcasting of the channel gain
    rows *= np.tile(np.asarray(gain, dtype=np.float32), w)
    rows += np.float32(offset + 0.5)
    bank = _noise_bank(float(noise_std))
    if frames.size <= bank.size:
        start = int(rng.integers(0, bank.size - frames.size + 1))
        rows += bank[start : start + frames.size].reshape(rows.shape)
    else:
        rows += rng.standard_normal(rows.shape, dtype=np.float32) * np.float32(noise_std)
    np.clip(rows, 0, 255, out=rows)
    return frames.astype(np.uint8)  # truncation after +0.5: rounding


def apply_nuisance(
    clean: np.ndarray,
    rng: np.random.Generator,
    gain: Sequence[float],
    offset: float,
    noise_std: float,
    max_shift: int,
) -> np.ndarray:
    """Shift, colour-gain, brighten and add Gaussian noise to float frames; returns uint8."""
    frames = shift_frames(clean, random_shifts(rng, len(clean), max_shift))
    return finish_frames(frames, rng, gain, offset, noise_std)


_CODECS: dict[str, dict[str, Any]] = {
    # name: container format, encoder, encoder options, bit rate (None: quality-based)
    "mpg": {"format": "mpeg", "codec": "mpeg1video", "bit_rate": 150_000,
            "options": {"flags": "+bitexact", "bf": "0", "g": "12"}},
    # constant quantiser: x264's CRF rate control was not byte-reproducible
    "mp4": {"format": "mp4", "codec": "libx264", "bit_rate": None,
            "options": {"preset": "veryfast", "qp": "28", "threads": "1",
                        "x264-params": "sliced-threads=0:lookahead-threads=1:sync-lookahead=0"}},
}


def write_video(path: Path, frames: np.ndarray, kind: str) -> None:
    """Encode uint8 RGB frames (T, H, W, 3) deterministically; kind is 'mpg' or 'mp4'.

    The encoder is single-threaded and x264 uses a constant quantiser (its CRF rate control
    was not byte-reproducible), so the bytes depend only on the pixels.  RGB is converted to
    yuv420p by libswscale (BT.601, limited range: what decoders assume for untagged video).
    """
    spec = _CODECS[kind]
    with av.open(str(path), "w", format=spec["format"],
                 container_options={"fflags": "+bitexact"}) as container:
        stream = container.add_stream(spec["codec"], rate=FPS, options=dict(spec["options"]))
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        stream.codec_context.thread_count = 1
        if spec["bit_rate"]:
            stream.bit_rate = spec["bit_rate"]
        for i, frame in enumerate(frames):
            picture = av.VideoFrame.from_ndarray(frame, format="rgb24")
            picture.pts = i
            container.mux(stream.encode(picture))
        container.mux(stream.encode(None))


def run_jobs(fn: Callable[[Any], Any], jobs: Sequence[Any], workers: int | None) -> list[Any]:
    """``[fn(job) for job in jobs]``, in order, over a process pool when it pays off."""
    if workers is None:
        workers = os.cpu_count() or 1
    workers = min(workers, max(1, len(jobs) // 4))
    if workers <= 1:
        return [fn(job) for job in jobs]
    with Pool(workers) as pool:
        return pool.map(fn, jobs, chunksize=max(1, min(16, len(jobs) // (4 * workers))))


def disk_mask(yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, ry: float, rx: float
              ) -> np.ndarray:
    """Boolean mask of an axis-aligned ellipse (empty when a radius is <= 0)."""
    if ry <= 0 or rx <= 0:
        return np.zeros(yy.shape, dtype=bool)
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0


# --------------------------------------------------------------------------------------------
# 1. GRID-style sentences
# --------------------------------------------------------------------------------------------

GRID_COMMANDS = ("bin", "lay", "place", "set")
GRID_COLORS = ("blue", "green", "red", "white")
GRID_PREPOSITIONS = ("at", "by", "in", "with")
GRID_LETTERS = tuple("abcdefghijklmnopqrstuvxyz")  # no 'w'
GRID_DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
GRID_ADVERBS = ("again", "now", "please", "soon")
GRID_SLOTS = (GRID_COMMANDS, GRID_COLORS, GRID_PREPOSITIONS, GRID_LETTERS, GRID_DIGITS,
              GRID_ADVERBS)
GRID_CHARS = " abcdefghijklmnopqrstuvwxyz"
GRID_NEUTRAL = len(GRID_CHARS)  # pattern index of the neutral "closed mouth" frame
GRID_SPEAKERS = ("s1", "s2", "s3", "s4")
GRID_FRAMES = 75
GRID_HEIGHT, GRID_WIDTH = 64, 128
GRID_COUNTS = {"train": 250, "dev": 25, "test": 25}  # per speaker, at scale 1
_GRID_TINTS = {"s1": (1.00, 0.92, 0.86), "s2": (0.88, 0.96, 1.06),
               "s3": (1.06, 1.00, 0.90), "s4": (0.94, 1.06, 0.96)}
_PALETTE = np.array([
    (230, 40, 40), (40, 190, 60), (50, 80, 235), (245, 225, 50),
    (225, 60, 225), (40, 215, 225), (250, 250, 250), (25, 25, 25),
], dtype=np.float32)


def grid_sentence(index: int) -> tuple[str, ...]:
    """The ``index``-th of the 64000 GRID sentences (mixed radix over the six slots)."""
    words = []
    for slot in reversed(GRID_SLOTS):
        index, k = divmod(index, len(slot))
        words.append(slot[k])
    return tuple(reversed(words))


def grid_video_id(words: Sequence[str]) -> str:
    """GRID id: initials of the words, the digit as its character ("bin blue at f two now"
    -> ``bbaf2n``)."""
    digit = str(GRID_DIGITS.index(words[4]))
    return words[0][0] + words[1][0] + words[2][0] + words[3] + digit + words[5][0]


@lru_cache(maxsize=1)
def grid_patterns() -> np.ndarray:
    """(28, 64, 128, 3) float32: one pattern per character of GRID_CHARS, then neutral."""
    rng = np.random.default_rng(_PATTERN_SEED)
    cells = rng.integers(0, len(_PALETTE), size=(len(GRID_CHARS), 4, 8))
    block = np.ones((GRID_HEIGHT // 4, GRID_WIDTH // 8, 1), dtype=np.float32)
    chars = np.stack([np.kron(_PALETTE[c], block) for c in cells])
    neutral = np.full((1, GRID_HEIGHT, GRID_WIDTH, 3), 120.0, dtype=np.float32)
    neutral[0, 27:37, 16:112] = (110, 40, 50)  # closed lips
    return np.concatenate([chars, neutral]).astype(np.float32)


@dataclass(frozen=True)
class GridJob:
    root: Path
    speaker: str
    words: tuple[str, ...]
    index: int
    seed: int


def _word_units(word: str) -> list[list[int]]:
    """Frame runs of one word: 2 frames per character, a neutral frame between repeats."""
    units: list[list[int]] = []
    for i, ch in enumerate(word):
        if i and word[i - 1] == ch:
            units.append([GRID_NEUTRAL])
        units.append([GRID_CHARS.index(ch)] * 2)
    return units


def grid_timeline(words: Sequence[str], rng: np.random.Generator
                  ) -> tuple[np.ndarray, list[tuple[int, int, str]]]:
    """Per-frame pattern indices (75,) and GRID segments ``(start_frame, end_frame, label)``."""
    words_units = [_word_units(w) for w in words]
    gaps = [[0] for _ in words[1:]]  # space pattern (index 0), 1 frame
    pauses = [0] * len(gaps)
    used = sum(len(r) for u in words_units for r in u) + len(gaps)
    slack = GRID_FRAMES - used - 4  # at least 2 frames of sil at each end
    for units in words_units:
        for run in units:
            if run[0] != GRID_NEUTRAL and slack > 0 and rng.random() < 0.5:
                run.append(run[0])
                slack -= 1
    for i, gap in enumerate(gaps):
        if slack > 0 and rng.random() < 0.5:
            gap.append(0)
            slack -= 1
        if slack > 0 and rng.random() < 0.25:
            pauses[i] = 1
            slack -= 1
    lead = 2 + int(rng.integers(0, slack + 1))
    frames = [GRID_NEUTRAL] * lead
    segments = [(0, lead, "sil")]
    for i, (word, units) in enumerate(zip(words, words_units)):
        start = len(frames)
        frames += [p for run in units for p in run]
        segments.append((start, len(frames), word))
        if i < len(gaps):
            start = len(frames)
            frames += gaps[i] + [GRID_NEUTRAL] * pauses[i]
            segments.append((start, len(frames), "sp"))
    segments.append((len(frames), GRID_FRAMES, "sil"))
    frames += [GRID_NEUTRAL] * (GRID_FRAMES - len(frames))
    return np.asarray(frames), segments


def format_align(segments: Iterable[tuple[int, int, str]]) -> str:
    """GRID ``.align`` text, times in GRID units (1000 per frame)."""
    return "".join(f"{s * 1000} {e * 1000} {label}\n" for s, e, label in segments)


@lru_cache(maxsize=1)
def _padded_grid_patterns(margin: int = 2) -> np.ndarray:
    return np.pad(grid_patterns(), ((0, 0), (margin, margin), (margin, margin), (0, 0)),
                  mode="edge")


def render_grid(timeline: np.ndarray, rng: np.random.Generator, speaker: str) -> np.ndarray:
    """uint8 (75, 64, 128, 3) video of a pattern timeline, with nuisance variation."""
    padded, m = _padded_grid_patterns(), 2
    frames = np.empty((len(timeline), GRID_HEIGHT, GRID_WIDTH, 3), dtype=np.float32)
    for t, (p, (dy, dx)) in enumerate(zip(timeline, random_shifts(rng, len(timeline), m))):
        frames[t] = padded[p, m - dy : m - dy + GRID_HEIGHT, m - dx : m - dx + GRID_WIDTH]
    gain = np.asarray(_GRID_TINTS[speaker]) * rng.uniform(0.85, 1.1)
    return finish_frames(frames, rng, gain, rng.uniform(-15, 15), noise_std=8.0)


def _grid_worker(job: GridJob) -> None:
    rng = sample_rng(job.seed, "grid", job.index)
    timeline, segments = grid_timeline(job.words, rng)
    frames = render_grid(timeline, rng, job.speaker)
    vid = grid_video_id(job.words)
    write_video(job.root / "videos" / job.speaker / f"{vid}.mpg", frames, "mpg")
    (job.root / "align" / job.speaker / "align" / f"{vid}.align").write_text(
        format_align(segments))


def build_grid(root: str | Path, seed: int = 0, scale: float = 1.0,
               counts: Mapping[str, int] | None = None,
               speakers: Sequence[str] = GRID_SPEAKERS, workers: int | None = None) -> int:
    """Write the GRID-style corpus into ``root``; ``counts`` are per speaker and split
    (default GRID_COUNTS, times ``scale``).  Returns the number of videos."""
    root = Path(root)
    counts = {s: scaled(n, scale) for s, n in (counts or GRID_COUNTS).items()}
    jobs, lists = [], {split: [] for split in counts}
    for k, spk in enumerate(speakers):
        (root / "videos" / spk).mkdir(parents=True, exist_ok=True)
        (root / "align" / spk / "align").mkdir(parents=True, exist_ok=True)
        plan_rng = np.random.default_rng([seed, _CORPUS_CODES["grid"], 10**6 + k])
        picks = iter(plan_rng.choice(64000, size=sum(counts.values()), replace=False))
        for split, n in counts.items():
            for _ in range(n):
                words = grid_sentence(int(next(picks)))
                jobs.append(GridJob(root, spk, words, len(jobs), seed))
                lists[split].append(f"{spk}/{grid_video_id(words)}")
    run_jobs(_grid_worker, jobs, workers)
    for split, names in lists.items():
        (root / f"{split}.txt").write_text("".join(f"{n}\n" for n in sorted(names)))
    return len(jobs)


# --------------------------------------------------------------------------------------------
# 2. Phoenix-2014T style sign language
# --------------------------------------------------------------------------------------------

SIGN_TIMES = {"HEUTE": "heute", "MORGEN": "morgen", "ABEND": "am abend",
              "NACHT": "in der nacht", "WOCHENENDE": "am wochenende", "MONTAG": "am montag"}
SIGN_REGIONS = {"NORD": "im norden", "SUED": "im süden", "WEST": "im westen",
                "OST": "im osten", "BERG": "in den bergen", "KUESTE": "an der küste"}
SIGN_WEATHER = {  # gloss: (plain, with STARK, with SCHWACH)
    "REGEN": ("regnet es", "regnet es kräftig", "regnet es nur leicht"),
    "SCHNEE": ("schneit es", "schneit es kräftig", "schneit es nur leicht"),
    "SONNE": ("scheint die sonne", "scheint die sonne kräftig", "scheint die sonne nur selten"),
    "GEWITTER": ("gibt es gewitter", "gibt es heftige gewitter", "gibt es vereinzelt gewitter"),
    "NEBEL": ("gibt es nebel", "gibt es dichten nebel", "gibt es leichten nebel"),
    "WIND": ("weht der wind", "weht ein starker wind", "weht ein schwacher wind"),
    "FROST": ("gibt es frost", "gibt es strengen frost", "gibt es leichten frost"),
    "WOLKE": ("ist es bewölkt", "ist es stark bewölkt", "ist es leicht bewölkt"),
}
SIGN_MODIFIERS = ("STARK", "SCHWACH")
SIGN_NUMBERS = {"NULL": "null", "FUENF": "fünf", "ZEHN": "zehn", "FUENFZEHN": "fünfzehn",
                "ZWANZIG": "zwanzig"}
SIGN_TRENDS = {"WARM": "wärmer", "KALT": "kälter"}
SIGN_GLOSSES = tuple(sorted({*SIGN_TIMES, *SIGN_REGIONS, *SIGN_WEATHER, *SIGN_MODIFIERS,
                             *SIGN_NUMBERS, *SIGN_TRENDS, "TEMPERATUR", "GRAD", "MINUS"}))
SIGN_SPECIALS = ("<s>", "<pad>", "</s>", "<unk>", "<mask>", "zh_CN", "de_DE", "zh_CSL")
SIGN_SIGNERS = ("Signer01", "Signer02", "Signer03", "Signer04")
SIGN_HEIGHT, SIGN_WIDTH = 128, 104
SIGN_COUNTS = {"train": 300, "dev": 50, "test": 50}


def gloss2ids() -> dict[str, int]:
    """Gloss vocabulary as in Phoenix-2014T's gloss2ids.pkl: specials 0..7, glosses sorted."""
    return {tok: i for i, tok in enumerate(SIGN_SPECIALS + SIGN_GLOSSES)}


def _pick(rng: np.random.Generator, options: Sequence[str]) -> str:
    return options[int(rng.integers(len(options)))]


def _maybe(rng: np.random.Generator, p: float, options: Sequence[str]) -> str | None:
    return _pick(rng, options) if rng.random() < p else None


def _weather_phrase(weather: str, mod: str | None) -> str:
    return SIGN_WEATHER[weather][0 if mod is None else 1 + SIGN_MODIFIERS.index(mod)]


def _weather_sentence(rng: np.random.Generator) -> tuple[list[str], list[str]]:
    weather, mod = _pick(rng, list(SIGN_WEATHER)), _maybe(rng, 0.4, SIGN_MODIFIERS)
    time_, region = _maybe(rng, 0.75, list(SIGN_TIMES)), _maybe(rng, 0.75, list(SIGN_REGIONS))
    if time_ is None and region is None:
        region = _pick(rng, list(SIGN_REGIONS))
    w_gl, phrase = [weather] + ([mod] if mod else []), _weather_phrase(weather, mod)
    t_txt, r_txt = SIGN_TIMES.get(time_, ""), SIGN_REGIONS.get(region, "")
    if region and (time_ is None or rng.random() < 0.5):  # region first
        return [region] + ([time_] if time_ else []) + w_gl, [r_txt, phrase, t_txt]
    return [time_] + ([region] if region else []) + w_gl, [t_txt, phrase, r_txt]


def _contrast_sentence(rng: np.random.Generator) -> tuple[list[str], list[str]]:
    time_ = _maybe(rng, 0.5, list(SIGN_TIMES))
    r1, r2 = (str(r) for r in rng.choice(list(SIGN_REGIONS), size=2, replace=False))
    w1, w2 = (str(w) for w in rng.choice(list(SIGN_WEATHER), size=2, replace=False))
    mod = _maybe(rng, 0.3, SIGN_MODIFIERS)
    glosses = ([time_] if time_ else []) + [r1, w1] + ([mod] if mod else []) + [r2, w2]
    first = ([SIGN_TIMES[time_], _weather_phrase(w1, mod), SIGN_REGIONS[r1]] if time_
             else [SIGN_REGIONS[r1], _weather_phrase(w1, mod)])
    return glosses, first + [",", SIGN_REGIONS[r2], _weather_phrase(w2, None)]


def _temperature_sentence(rng: np.random.Generator) -> tuple[list[str], list[str]]:
    time_, region = _maybe(rng, 0.6, list(SIGN_TIMES)), _maybe(rng, 0.5, list(SIGN_REGIONS))
    number = _pick(rng, list(SIGN_NUMBERS))
    minus = number != "NULL" and rng.random() < 0.3
    glosses = [g for g in (time_, region) if g] + ["TEMPERATUR"] + (["MINUS"] if minus else [])
    glosses += [number, "GRAD"]
    r_txt = SIGN_REGIONS.get(region, "")
    value = ("minus " if minus else "") + SIGN_NUMBERS[number] + " grad"
    if time_:
        return glosses, [SIGN_TIMES[time_], "liegen die temperaturen", r_txt, "bei", value]
    return glosses, ["die temperaturen liegen", r_txt, "bei", value]


def _trend_sentence(rng: np.random.Generator) -> tuple[list[str], list[str]]:
    time_, region = _pick(rng, list(SIGN_TIMES)), _maybe(rng, 0.6, list(SIGN_REGIONS))
    trend = _pick(rng, list(SIGN_TRENDS))
    t_txt, r_txt = SIGN_TIMES[time_], SIGN_REGIONS.get(region, "")
    if region and rng.random() < 0.5:
        return [region, time_, trend], [r_txt, "wird es", t_txt, SIGN_TRENDS[trend]]
    return [time_] + ([region] if region else []) + [trend], [
        t_txt, "wird es", r_txt, SIGN_TRENDS[trend]]


_SIGN_TEMPLATES = (_weather_sentence, _contrast_sentence, _temperature_sentence,
                   _trend_sentence)


def sign_sentence(rng: np.random.Generator) -> tuple[str, str]:
    """A (gloss, text) pair: 2-6 upper-case glosses and its lower-case German text ending
    in `` .``; the text is a deterministic function of the gloss sequence."""
    template = _SIGN_TEMPLATES[int(rng.choice(4, p=[0.4, 0.2, 0.2, 0.2]))]
    glosses, parts = template(rng)
    text = " ".join(" ".join(p for p in parts if p).split())
    return " ".join(glosses), text + " ."


_SIGNER_LOOKS = {  # background, shirt, skin
    "Signer01": ((70, 80, 100), (40, 45, 60), (225, 185, 160)),
    "Signer02": ((95, 75, 70), (60, 35, 35), (200, 160, 130)),
    "Signer03": ((70, 95, 75), (35, 55, 40), (170, 125, 95)),
    "Signer04": ((90, 90, 90), (30, 30, 30), (235, 200, 180)),
}
_HAND_COLORS = np.array([  # saturated or white: stand out from every signer's clothes and skin
    (230, 40, 40), (40, 190, 60), (50, 80, 235), (245, 225, 50),
    (225, 60, 225), (40, 215, 225), (255, 140, 20), (250, 250, 250),
], dtype=np.float32)
_SHAPES = ("disk", "square", "ring", "cross")
# Each shape has its own hand size too (areas ~1 : 1.6 : 2.2 : 3.3): a frontend that averages over
# the frame, as S3D's does, then still tells shapes apart by the amount of the hand's colour.
_SHAPE_SCALE = {"disk": 0.75, "square": 1.0, "ring": 1.3, "cross": 1.6}
_REST = ((112.0, 34.0), (112.0, 70.0))  # (y, x) of both hands at rest


@lru_cache(maxsize=1)
def _grids() -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:SIGN_HEIGHT, 0:SIGN_WIDTH]
    return yy.astype(np.float32), xx.astype(np.float32)


@lru_cache(maxsize=None)
def signer_background(signer: str) -> np.ndarray:
    """(128, 104, 3) float32 image: background, torso and head of a signer."""
    bg, shirt, skin = _SIGNER_LOOKS[signer]
    yy, xx = _grids()
    img = np.empty((SIGN_HEIGHT, SIGN_WIDTH, 3), dtype=np.float32)
    img[:] = bg
    img[disk_mask(yy, xx, 128, 52, 62, 40)] = shirt
    img[disk_mask(yy, xx, 34, 52, 17, 13)] = skin
    return img


@lru_cache(maxsize=1)
def gloss_looks() -> dict[str, dict[str, Any]]:
    """Per gloss: colour, shape, Bezier control points of the moving hand, other hand."""
    rng = np.random.default_rng(_PATTERN_SEED + 1)
    looks = {}
    for k, gloss in enumerate(SIGN_GLOSSES):
        points = np.zeros((3, 2))
        while np.linalg.norm(points[2] - points[0]) < 35:  # a clearly visible movement
            points = np.stack([rng.uniform(18, 96, 3), rng.uniform(14, 90, 3)], axis=1)
        # colour x shape is unique for up to 32 glosses
        looks[gloss] = {"color": _HAND_COLORS[k % 8], "shape": _SHAPES[(k // 8) % 4],
                        "path": points, "other": (rng.uniform(60, 100), rng.uniform(14, 40))}
    return looks


def _shape_mask(shape: str, cy: float, cx: float, r: float) -> np.ndarray:
    yy, xx = _grids()
    dy, dx = np.abs(yy - cy), np.abs(xx - cx)
    if shape == "disk":
        return dy**2 + dx**2 <= r**2
    if shape == "square":
        return np.maximum(dy, dx) <= 0.85 * r
    if shape == "ring":
        return (dy**2 + dx**2 <= r**2) & (dy**2 + dx**2 >= (0.5 * r) ** 2)
    return (np.maximum(dy, dx) <= r) & (np.minimum(dy, dx) <= 0.35 * r)  # cross


def _bezier(points: np.ndarray, t: float) -> np.ndarray:
    p0, p1, p2 = points
    return (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t**2 * p2


def sign_frame(signer: str, gloss: str | None, t: float, jitter: np.ndarray, size: float
               ) -> np.ndarray:
    """One clean frame: ``gloss`` at phase ``t`` in [0, 1], or both hands at rest."""
    img = signer_background(signer).copy()
    skin = np.asarray(_SIGNER_LOOKS[signer][2], dtype=np.float32)
    yy, xx = _grids()
    if gloss is None:
        for cy, cx in _REST:
            img[disk_mask(yy, xx, cy, cx, 7 * size, 7 * size)] = skin
        return img
    look = gloss_looks()[gloss]
    oy, ox = look["other"]
    oy, ox = oy + jitter[0], SIGN_WIDTH - ox + jitter[1]
    img[disk_mask(yy, xx, oy, ox, 7 * size, 7 * size)] = skin
    cy, cx = _bezier(look["path"], t) + jitter
    img[_shape_mask(look["shape"], cy, cx, 16 * size * _SHAPE_SCALE[look["shape"]])] = look["color"]
    return img


def sign_timeline(glosses: Sequence[str], rng: np.random.Generator
                  ) -> list[tuple[str | None, float]]:
    """Per frame (gloss or None for neutral, phase in [0, 1])."""
    frames: list[tuple[str | None, float]] = [(None, 0.0)] * int(rng.integers(2, 5))
    for i, gloss in enumerate(glosses):
        n = int(rng.integers(6, 10))
        frames += [(gloss, j / (n - 1)) for j in range(n)]
        if i + 1 < len(glosses) and rng.random() < 0.4:
            frames += [(None, 0.0)] * int(rng.integers(1, 3))
    return frames + [(None, 0.0)] * int(rng.integers(2, 5))


@dataclass(frozen=True)
class SignJob:
    root: Path
    split: str
    name: str
    index: int
    seed: int


def _sign_worker(job: SignJob) -> dict[str, Any]:
    rng = sample_rng(job.seed, "sign", job.index)
    gloss, text = sign_sentence(rng)
    signer = _pick(rng, SIGN_SIGNERS)
    timeline = sign_timeline(gloss.split(), rng)
    jitter, size = rng.uniform(-3, 3, size=2), rng.uniform(0.9, 1.1)
    clean = np.stack([sign_frame(signer, g, t, jitter, size) for g, t in timeline])
    frames = apply_nuisance(clean, rng, rng.uniform(0.9, 1.1, size=3), rng.uniform(-15, 15),
                            noise_std=6.0, max_shift=2)
    write_video(job.root / "videos" / f"{job.name}.mp4", frames, "mp4")
    ids = gloss2ids()
    return {"name": job.name, "signer": signer, "gloss": gloss, "text": text,
            "num_frames": len(frames),
            "alignments": {"demo": " ".join(str(ids[g]) if g else "0" for g, _ in timeline)}}


def _reduce_empty_tensor(tensor: Any) -> tuple[Callable[..., Any], tuple[Any, ...]]:
    """Pickle an empty tensor as a call of ``torch.zeros(shape)``: torch's own tensor pickling
    embeds a memory address, so its bytes change from run to run."""
    import torch

    if tensor.numel() or tensor.dtype != torch.float32:
        raise ValueError("only empty float32 tensors are pickled deterministically")
    return torch.zeros, (tuple(tensor.shape),)


def _canonical(obj: Any) -> Any:
    """Copy of nested lists/dicts whose equal strings are one object: pickle's memo then
    does not depend on where the strings came from (this process or a worker)."""
    if isinstance(obj, str):
        return sys.intern(obj)
    if isinstance(obj, dict):
        return {_canonical(k): _canonical(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_canonical(v) for v in obj]
    return obj


def write_gzip_pickle(path: Path, obj: Any) -> None:
    """Pickle (protocol 4) into a gzip file with mtime 0 and no file name: deterministic
    bytes, read back with ``pickle.load(gzip.open(path))`` (needs torch for the tensors)."""
    import torch

    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0,
                                                filename="") as f:
        pickler = pickle.Pickler(f, protocol=4)
        pickler.dispatch_table = {**copyreg.dispatch_table, torch.Tensor: _reduce_empty_tensor}
        pickler.dump(_canonical(obj))


def build_sign(root: str | Path, seed: int = 0, scale: float = 1.0,
               counts: Mapping[str, int] | None = None, workers: int | None = None) -> int:
    """Write the Phoenix-2014T style corpus into ``root``; ``counts`` per split (default
    SIGN_COUNTS, times ``scale``).  Returns the number of videos."""
    import torch  # only here: the real files hold a torch tensor under 'sign'

    root = Path(root)
    counts = {s: scaled(n, scale) for s, n in (counts or SIGN_COUNTS).items()}
    jobs = []
    for split, n in counts.items():
        (root / "videos" / split).mkdir(parents=True, exist_ok=True)
        jobs += [SignJob(root, split, f"{split}/demo_{i:05d}", len(jobs) + i, seed)
                 for i in range(1, n + 1)]
    entries = run_jobs(_sign_worker, jobs, workers)
    for split in counts:
        rows = [dict(e, sign=torch.empty(0)) for e in entries if e["name"].startswith(split + "/")]
        rows = [{k: r[k] for k in ("name", "signer", "gloss", "text", "sign", "num_frames",
                                   "alignments")} for r in rows]
        write_gzip_pickle(root / f"sign.{split}", rows)
    with open(root / "gloss2ids.pkl", "wb") as f:
        pickle.dump(gloss2ids(), f, protocol=4)
    return len(jobs)


# --------------------------------------------------------------------------------------------
# 3. LRW-style words
# --------------------------------------------------------------------------------------------

LRW_FRAMES = 29
LRW_SIZE = 96
LRW_COUNTS = {"train": 40, "val": 8, "test": 8}  # per word, at scale 1
# Mouth shapes: (half width, half opening, teeth visibility, lip thickness), pixels at 96x96.
_VISEMES = {
    "rest": (17.0, 0.0, 0.0, 4.5), "M": (15.0, 0.0, 0.0, 2.5), "A": (19.0, 13.0, 0.3, 4.0),
    "O": (11.0, 10.0, 0.0, 7.0), "U": (8.0, 5.0, 0.0, 8.0), "E": (23.0, 5.0, 1.0, 3.0),
    "I": (21.0, 7.0, 1.0, 3.0), "F": (18.0, 3.0, 1.0, 5.0), "T": (19.0, 4.0, 0.7, 4.0),
    "K": (17.0, 8.0, 0.0, 4.0), "W": (9.0, 4.0, 0.0, 8.0),
}
LRW_WORDS = {  # word: rough viseme sequence
    "ABOUT": "A M A O T", "BECAUSE": "M I K O T", "FAMILY": "F A M I T E",
    "GOVERNMENT": "K A F A T M A T", "HOUSE": "K A O T", "MONEY": "M A T E",
    "NUMBER": "T A M A", "PEOPLE": "M E M A T", "SOMETHING": "T A M T I K",
    "WORLD": "W O T",
}


def word_visemes(word: str, num_frames: int) -> np.ndarray:
    """(num_frames, 4) mouth parameters: the word's visemes linearly interpolated in time."""
    keys = np.array([_VISEMES[v] for v in ["rest", *LRW_WORDS[word].split(), "rest"]])
    pos = np.linspace(0, len(keys) - 1, num_frames + 2)[1:-1]
    return np.stack([np.interp(pos, np.arange(len(keys)), col) for col in keys.T], axis=1)


@lru_cache(maxsize=1)
def _face_base() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Grayscale lower face (96, 96) plus pixel coordinate grids."""
    yy, xx = np.mgrid[0:LRW_SIZE, 0:LRW_SIZE].astype(np.float32)
    face = 170.0 - 0.25 * yy  # light from above
    face[((yy - 20) / 70) ** 2 + ((xx - 48) / 46) ** 2 > 1.0] = 70.0  # outside the jaw
    face[disk_mask(yy, xx, 14, 48, 10, 9)] -= 25.0  # nose shadow
    return face.astype(np.float32), yy, xx


def mouth_frame(width: float, opening: float, teeth: float, lips: float, cy: float,
                cx: float, scale: float) -> np.ndarray:
    """Grayscale (96, 96) frame: lips ring, dark opening, teeth band at its top."""
    face, yy, xx = _face_base()
    img = face.copy()
    w, h = width * scale, opening * scale
    img[disk_mask(yy, xx, cy, cx, h + lips + 1.0, w + lips)] = 95.0  # lips
    if h < 1.0:
        img[disk_mask(yy, xx, cy, cx, 1.0, w)] = 40.0  # lip line of a closed mouth
        return img
    inner = disk_mask(yy, xx, cy, cx, h, w)
    img[inner] = 30.0
    band = inner & (yy < cy - h * 0.35)
    img[band] = 30.0 + teeth * 195.0
    return img


@dataclass(frozen=True)
class LrwJob:
    root: Path
    word: str
    split: str
    number: int
    index: int
    seed: int


def _lrw_worker(job: LrwJob) -> None:
    rng = sample_rng(job.seed, "lrw", job.index)
    n_vis = len(LRW_WORDS[job.word].split())
    n_word = min(LRW_FRAMES - 2, int(round(n_vis * rng.uniform(2.2, 2.8))))
    start = (LRW_FRAMES - n_word) // 2
    params = np.array([_VISEMES["rest"]] * LRW_FRAMES)
    params[start : start + n_word] = word_visemes(job.word, n_word)
    cy, cx = 62 + rng.uniform(-2, 2), 48 + rng.uniform(-2, 2)
    scale = rng.uniform(0.9, 1.1)
    gray = np.stack([mouth_frame(*p, cy=cy, cx=cx, scale=scale) for p in params])
    tint = rng.uniform(0.85, 1.1) * np.array([1.08, 0.95, 0.85]) * rng.uniform(0.95, 1.05, 3)
    frames = apply_nuisance(gray[..., None].repeat(3, axis=-1), rng, tint,
                            rng.uniform(-20, 20), noise_std=6.0, max_shift=2)
    stem = job.root / job.word / job.split / f"{job.word}_{job.number:05d}"
    write_video(stem.with_suffix(".mp4"), frames, "mp4")
    stem.with_suffix(".txt").write_text(
        f"Text:  {job.word}\nConf:  4\nDuration: {n_word / FPS:.2f} seconds\n")


def build_lrw(root: str | Path, seed: int = 0, scale: float = 1.0,
              counts: Mapping[str, int] | None = None, words: Iterable[str] = LRW_WORDS,
              workers: int | None = None) -> int:
    """Write the LRW-style corpus into ``root`` (the ``lipread_mp4`` directory); ``counts``
    per word and split (default LRW_COUNTS, times ``scale``).  Returns the number of videos."""
    root = Path(root)
    counts = {s: scaled(n, scale) for s, n in (counts or LRW_COUNTS).items()}
    jobs = []
    for word in words:
        for split, n in counts.items():
            (root / word / split).mkdir(parents=True, exist_ok=True)
            jobs += [LrwJob(root, word, split, i, len(jobs) + i - 1, seed)
                     for i in range(1, n + 1)]
    run_jobs(_lrw_worker, jobs, workers)
    return len(jobs)


# --------------------------------------------------------------------------------------------
# Orchestration and CLI
# --------------------------------------------------------------------------------------------

# corpus -> (builder, data root relative to the corpus directory)
_BUILDERS: dict[str, tuple[Callable[..., int], str]] = {
    "grid": (build_grid, "."), "sign": (build_sign, "."), "lrw": (build_lrw, "lipread_mp4"),
}


def _marker_text(seed: int, scale: float) -> str:
    return json.dumps({"version": GENERATOR_VERSION, "seed": seed, "scale": scale},
                      sort_keys=True) + "\n"


def is_complete(corpus_dir: Path, seed: int, scale: float) -> bool:
    """Whether ``corpus_dir`` holds a finished corpus made with these settings."""
    marker = corpus_dir / MARKER
    return marker.is_file() and marker.read_text() == _marker_text(seed, scale)


def build_corpus(name: str, corpus_dir: Path, seed: int, scale: float,
                 workers: int | None = None) -> int:
    """Build one corpus in ``<corpus_dir>.tmp``, mark it complete, rename it into place
    (replacing an older generated corpus, never a directory this generator did not make)."""
    if corpus_dir.is_dir() and not (corpus_dir / MARKER).is_file() and any(corpus_dir.iterdir()):
        raise FileExistsError(f"{corpus_dir} exists but was not made by dataset.synthetic "
                              f"(no {MARKER}); move it away or choose another --out")
    builder, sub = _BUILDERS[name]
    tmp = corpus_dir.with_name(corpus_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    count = builder(tmp / sub, seed=seed, scale=scale, workers=workers)
    (tmp / MARKER).write_text(_marker_text(seed, scale))
    shutil.rmtree(corpus_dir, ignore_errors=True)
    os.replace(tmp, corpus_dir)
    return count


def parse_only(only: Iterable[str] | str | None) -> list[str]:
    """Corpus names from ``only`` (names or comma lists); all corpora when empty/None."""
    if only is None:
        return list(CORPORA)
    if isinstance(only, str):
        only = [only]
    names = [n.strip() for item in only for n in item.split(",") if n.strip()]
    unknown = sorted(set(names) - set(CORPORA))
    if unknown:
        raise ValueError(f"unknown corpus {unknown}; choose from {', '.join(CORPORA)}")
    return [n for n in CORPORA if n in names] or list(CORPORA)


def generate(out_dir: str | Path = DEFAULT_OUT, seed: int = 0,
             only: Iterable[str] | None = None, scale: float = 1.0, *,
             workers: int | None = None, log: Callable[[str], None] | None = print
             ) -> dict[str, Path]:
    """Generate the demo corpora under ``out_dir`` (skipping complete ones).

    Returns corpus name -> data root: ``<out>/grid``, ``<out>/sign``,
    ``<out>/lrw/lipread_mp4``.  ``scale`` multiplies the sample counts (at least 1 per
    split and speaker / word); ``workers`` is the process count (default ``os.cpu_count()``).
    """
    if scale <= 0:
        raise ValueError("scale must be positive")
    out_dir, log = Path(out_dir), log or (lambda _msg: None)
    roots = {}
    for name in parse_only(only):
        corpus_dir = out_dir / name
        roots[name] = corpus_dir / _BUILDERS[name][1]
        if is_complete(corpus_dir, seed, scale):
            log(f"{name}: {corpus_dir} is complete (seed {seed}, scale {scale}), skipping")
            continue
        start = time.perf_counter()
        count = build_corpus(name, corpus_dir, seed, scale, workers)
        log(f"{name}: wrote {count} videos to {corpus_dir} in {time.perf_counter() - start:.1f} s")
    return roots


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point of ``python -m dataset.synthetic``."""
    parser = argparse.ArgumentParser(prog="python -m dataset.synthetic",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output root (data/demo)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (0)")
    parser.add_argument("--only", action="append", metavar="grid|sign|lrw",
                        help="corpus to generate; repeatable or a comma list (default: all)")
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies sample counts")
    parser.add_argument("--workers", type=int, default=None, help="processes (cpu count)")
    args = parser.parse_args(argv)
    try:
        generate(args.out, seed=args.seed, only=args.only, scale=args.scale,
                 workers=args.workers)
    except (ValueError, FileExistsError) as err:
        parser.error(str(err))
    return 0


if __name__ == "__main__":
    sys.exit(main())
