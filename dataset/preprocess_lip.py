"""Mouth crops for lip reading: ``python -m dataset.preprocess_lip --input VIDEO_OR_DIR --output DIR``.

Per video: face landmarks in every frame with mediapipe's face mesh; the mouth centre (the mean of the
outer-lip ring) smoothed over time with a centred moving average; one crop per frame around it, resized
to ``--size`` (square) or ``--height`` x ``--width``, in colour or ``--gray``. A crop is ``--crop-scale``
times the distance between the outer eye corners wide (the median over the video, so a clip keeps one
crop size while the mouth opens and closes) and as high as the output's aspect ratio makes it; it scales
with the face. The default, 1.27, is the field of view of LipNet-PyTorch's GRID crops: 160 px wide on
faces aligned so that these eye corners lie 126 px apart.

Writes one ``.npz`` per video, mirroring the input tree, holding ``data`` (T x H x W uint8 grayscale, or
T x H x W x 3 RGB) and ``centers`` (T x 2 float32: the smoothed mouth centre in the video's pixels, x
then y). Frames where no face is found take their landmarks from their neighbours (interpolated in time)
and are counted; a video without any face is reported and nothing is written for it. Files are written
atomically, and outputs that exist and load are kept, so an interrupted run continues where it stopped.
Needs mediapipe 0.10.14 (``pip install -e '.[lip]'``), whose wheel carries the face mesh models.
"""
from __future__ import annotations

import argparse
import multiprocessing
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from dataset.video import VideoSource, open_video, resize_frames, sample_indices
from utils.checkpoint import atomic_write
from utils.errors import DataError, UserError, one_line

VIDEO_SUFFIXES = (".mp4", ".mpg", ".mpeg", ".avi", ".mov", ".mkv", ".webm")
OUTER_LIPS = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 409, 270, 269, 267, 0, 37, 39, 40, 185)
OUTER_EYE_CORNERS = (33, 263)  # face mesh indices, the subject's right and left eye
LUMA = np.array([0.299, 0.587, 0.114], np.float32)  # ITU-R 601, as PIL's and OpenCV's grayscale
CHUNK = 64  # frames decoded at a time: memory stays bounded on long videos


class NoFaceError(DataError):
    pass


@dataclass(frozen=True)
class CropSpec:
    height: int
    width: int
    gray: bool = False
    smooth: int = 5  # frames in the centred moving average of the mouth centre (1: none)
    crop_scale: float = 1.27


@dataclass(frozen=True)
class Outcome:
    video: Path
    status: str  # "written", "kept" (a complete output existed), "no face" or "failed"
    frames: int = 0
    filled: int = 0  # frames without a face, filled from their neighbours
    message: str = ""


def find_videos(source: Path, output: Path) -> list[tuple[Path, Path]]:
    """(video, npz) pairs: one file, or every video under a folder with the tree mirrored under `output`."""
    if source.is_file():
        return [(source, output / f"{source.stem}.npz")]
    if not source.is_dir():
        raise UserError(f"input {source} does not exist")
    videos = sorted(p for p in source.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file())
    if not videos:
        raise UserError(f"input {source} holds no videos ({', '.join(VIDEO_SUFFIXES)})")
    return [(video, (output / video.relative_to(source)).with_suffix(".npz")) for video in videos]


def is_complete(path: Path) -> bool:
    """An output that a finished run wrote: it loads, with as many centres as frames."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            return len(archive["data"]) == len(archive["centers"]) > 0
    except Exception:  # missing, truncated or foreign: made again
        return False


class MouthFinder:
    """Face mesh over the frames of one video at a time (tracking between frames, reset between videos)."""

    def __init__(self) -> None:
        try:
            from mediapipe.python.solutions import face_mesh
        except ImportError:
            raise UserError("mouth crops need mediapipe: pip install -e '.[lip]' (mediapipe 0.10.14)") from None
        self._mesh = face_mesh.FaceMesh(static_image_mode=False, max_num_faces=1)

    def landmarks(self, source: VideoSource) -> tuple[np.ndarray, np.ndarray]:
        """Per frame the mouth centre (x, y) and the eye-corner distance in pixels; NaN where no face is found."""
        self._mesh.reset()
        centers = np.full((source.num_frames, 2), np.nan)
        eyes = np.full(source.num_frames, np.nan)
        with warnings.catch_warnings():  # mediapipe 0.10.14 calls a protobuf function deprecated in protobuf 4.25
            warnings.filterwarnings("ignore", message="SymbolDatabase.GetPrototype", category=UserWarning)
            for start, frames in read_chunks(source):
                for t, frame in enumerate(frames, start):
                    found = self._mesh.process(frame).multi_face_landmarks
                    if found:
                        points = np.array([(p.x, p.y) for p in found[0].landmark]) * frame.shape[1::-1]
                        centers[t] = points[list(OUTER_LIPS)].mean(axis=0)
                        eyes[t] = np.linalg.norm(points[OUTER_EYE_CORNERS[0]] - points[OUTER_EYE_CORNERS[1]])
        return centers, eyes


def read_chunks(source: VideoSource) -> Iterator[tuple[int, np.ndarray]]:
    for start in range(0, source.num_frames, CHUNK):
        yield start, source.read(range(start, min(start + CHUNK, source.num_frames)))


def fill_gaps(values: np.ndarray) -> np.ndarray:
    """NaN rows replaced by linear interpolation between the nearest found rows (the nearest one at the ends)."""
    found = ~np.isnan(values).any(axis=1)
    t = np.arange(len(values))
    return np.stack([np.interp(t, t[found], column[found]) for column in values.T], axis=1)


def smooth(values: np.ndarray, window: int) -> np.ndarray:
    """Centred moving average over `window` frames; near the ends the window shrinks to stay centred."""
    half = np.minimum(window // 2, np.minimum(np.arange(len(values)), np.arange(len(values))[::-1]))
    sums = np.concatenate([np.zeros((1, values.shape[1])), np.cumsum(values, axis=0)])
    t = np.arange(len(values))
    return (sums[t + half + 1] - sums[t - half]) / (2 * half + 1)[:, None]


def crop(frames: np.ndarray, centers: np.ndarray, box: tuple[int, int]) -> np.ndarray:
    """A `box` (height, width) from each frame around its centre; outside the frame its edge pixels repeat."""
    height, width = frames.shape[1:3]
    crops = []
    for frame, (cx, cy) in zip(frames, centers):
        rows = np.clip(np.arange(box[0]) + round(cy - box[0] / 2), 0, height - 1)
        cols = np.clip(np.arange(box[1]) + round(cx - box[1] / 2), 0, width - 1)
        crops.append(frame[rows[:, None], cols[None, :]])
    return np.stack(crops)


def mouth_crops(source: VideoSource, finder: MouthFinder, spec: CropSpec) -> tuple[np.ndarray, np.ndarray, int]:
    """(data, centers, frames filled); NoFaceError when no frame shows a face."""
    centers, eyes = finder.landmarks(source)
    missing = int(np.isnan(eyes).sum())
    if missing == len(eyes):
        raise NoFaceError(f"no face found in any of its {len(eyes)} frames")
    centers = smooth(fill_gaps(centers), spec.smooth)
    box_width = max(2, round(spec.crop_scale * float(np.nanmedian(eyes))))
    box = (max(2, round(box_width * spec.height / spec.width)), box_width)
    data = []
    for start, frames in read_chunks(source):
        crops = resize_frames(crop(frames, centers[start:start + len(frames)], box), (spec.height, spec.width))
        data.append((crops.astype(np.float32) @ LUMA).round().astype(np.uint8) if spec.gray else crops)
    return np.concatenate(data), centers.astype(np.float32), missing


def read_user_frames(spec: str, size: tuple[int, int], max_frames: int | None,
                     crop_mouth: str = "auto") -> tuple[np.ndarray, bool]:
    """A user's video (an `open_video` spec) for a lip reading model whose input is `size` (height, width): its
    frames, `max_frames` spread evenly as the datasets read theirs, T x H x W x 3 uint8 RGB, and whether they
    were cropped here. Frames that are not a mouth crop already (`crop_mouth` 'auto': their aspect ratio is not
    within 10 % of `size`'s; 'yes' always; 'no' never) become their mouth region at `size`, by `mouth_crops`."""
    source = open_video(spec)
    indices = sample_indices(source.num_frames, max_frames)
    frames = source.read(indices)
    height, width = frames.shape[1:3]
    is_crop = abs((width / height) / (size[1] / size[0]) - 1) <= 0.1
    if crop_mouth == "no" or (crop_mouth == "auto" and is_crop):
        return frames, False
    try:
        data, _, _ = mouth_crops(source, MouthFinder(), CropSpec(*size))
    except DataError as err:  # e.g. no face in any frame
        raise DataError(f"{source.name}: {err}") from None
    return data[indices], True


_finder: MouthFinder | None = None  # one face mesh per process, made on its first video


def process(job: tuple[Path, Path, CropSpec]) -> Outcome:
    video, output, spec = job
    global _finder
    if _finder is None:
        _finder = MouthFinder()
    try:
        source = open_video(video)
        data, centers, filled = mouth_crops(source, _finder, spec)
    except DataError as err:
        return Outcome(video, "no face" if isinstance(err, NoFaceError) else "failed", message=one_line(err))
    atomic_write(output, lambda f: np.savez_compressed(f, data=data, centers=centers))
    return Outcome(video, "written", frames=len(data), filled=filled)


def preprocess(source: Path, output: Path, spec: CropSpec, workers: int = 1) -> list[Outcome]:
    """Crop every video under `source` into `output`; the outcomes in the order the videos finish."""
    pairs = find_videos(source, output)
    done = [is_complete(npz) for _, npz in pairs]
    kept = [Outcome(video, "kept") for (video, _), complete in zip(pairs, done) if complete]
    jobs = [(video, npz, spec) for (video, npz), complete in zip(pairs, done) if not complete]
    if workers <= 1 or len(jobs) <= 1:
        return kept + [report(process(job)) for job in jobs]
    # spawn: a forked child would inherit the parent's torch and mediapipe threads in whatever state
    with multiprocessing.get_context("spawn").Pool(min(workers, len(jobs))) as pool:
        return kept + [report(outcome) for outcome in pool.imap_unordered(process, jobs)]


def report(outcome: Outcome) -> Outcome:
    if outcome.status == "no face":
        print(f"{outcome.video}: {outcome.message}; skipped, nothing written", flush=True)
    elif outcome.status == "failed":
        print(f"{outcome.video}: skipped: {outcome.message}", flush=True)
    elif outcome.filled:
        print(f"{outcome.video}: {outcome.filled} of {outcome.frames} frames without a face, "
              "filled from their neighbours", flush=True)
    return outcome


def summary(outcomes: Sequence[Outcome]) -> str:
    count = {status: sum(o.status == status for o in outcomes) for status in ("written", "kept", "no face", "failed")}
    filled = [o.filled for o in outcomes if o.filled]
    return (f"{len(outcomes)} videos: {count['written']} written, {count['kept']} kept from an earlier run, "
            f"{count['no face']} without a face, {count['failed']} unreadable; "
            f"{sum(filled)} frames filled in {len(filled)} videos")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dataset.preprocess_lip", description=__doc__.split("\n\n")[0])
    parser.add_argument("--input", type=Path, required=True, help="a video, or a folder searched recursively")
    parser.add_argument("--output", type=Path, required=True, help="folder for the .npz files (the tree mirrored)")
    parser.add_argument("--size", type=int, help="square crops of this side (LRW: 96)")
    parser.add_argument("--height", type=int, help="crop height (LipNet: 64 with --width 128)")
    parser.add_argument("--width", type=int, help="crop width")
    parser.add_argument("--gray", action="store_true", help="grayscale crops (T x H x W) instead of RGB")
    parser.add_argument("--smooth", type=int, default=5, help="frames (odd) in the moving average of the centre (5)")
    parser.add_argument("--crop-scale", type=float, default=1.27, help="crop width in eye-corner distances")
    parser.add_argument("--workers", type=int, default=1, help="processes (1)")
    args = parser.parse_args(argv)
    if (args.size is None) == (args.height is None or args.width is None):
        parser.error("give either --size or both --height and --width")
    height, width = (args.size, args.size) if args.size else (args.height, args.width)
    if min(height, width, args.smooth, args.workers) < 1 or args.crop_scale <= 0:
        parser.error("sizes, --smooth and --workers must be at least 1, --crop-scale positive")
    spec = CropSpec(height, width, args.gray, args.smooth, args.crop_scale)
    try:
        outcomes = preprocess(args.input, args.output, spec, args.workers)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        return 2
    print(summary(outcomes), flush=True)
    return 1 if any(o.status in ("no face", "failed") for o in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())
