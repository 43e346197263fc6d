"""Video input from four kinds of source behind one interface; only the frames asked for are decoded.

`open_video(spec)` picks the source from the spec string:

- ``path/to/clip.mp4`` (any file that is not a folder): a video file, decoded with decord;
- ``path/to/frames/``: a folder of png/jpg frames (Phoenix ``fullFrame-210x260px/<split>/<name>/``),
  in natural order of the file names (``images9.png`` before ``images10.png``);
- ``path/to/archive.zip@<member>``: frames inside a zip archive (SLRT's layout). ``<member>`` is
  either a folder inside the archive (``images/<name>``: every png/jpg directly in it) or a file
  pattern with one printf integer field in the file name (``images/<name>/images%04d.png``,
  ``%d`` for unpadded numbers): the members that match, ordered by that number, whatever it
  starts from. The split is at the first ``.zip@``;
- ``path/to/clip.npz``: mouth crops written by ``python -m dataset.preprocess_lip``, whose ``data`` array
  is T x H x W (grayscale, given as three equal channels) or T x H x W x 3 (RGB) uint8.

Every failure (missing or empty source, no matching frames, an undecodable frame) is one
`DataError` that names the source.
"""
from __future__ import annotations

import io
import os
import re
import zipfile
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from utils.errors import DataError, one_line

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
_ZIP_SPEC = re.compile(r"^(.*?\.zip)@(.*)$", re.IGNORECASE)
_PRINTF_FIELD = re.compile(r"%(0?)(\d*)d")


class VideoSource(ABC):
    """`num_frames` frames; `read(indices)` decodes those frames (repeats decoded once)."""

    num_frames: int

    def __init__(self, name: str) -> None:
        self.name = name

    def read(self, indices: Sequence[int]) -> np.ndarray:
        """The frames at `indices` (any order, repeats allowed) as T x H x W x 3 uint8 RGB."""
        wanted = np.asarray(indices, dtype=np.int64)
        if wanted.size == 0:
            raise ValueError(f"no frame indices asked of {self.name}")
        if wanted.min() < 0 or wanted.max() >= self.num_frames:
            bad = int(wanted.max() if wanted.max() >= self.num_frames else wanted.min())
            raise DataError(f"{self.name}: frame {bad} asked for, but it has {self.num_frames} frames")
        unique, inverse = np.unique(wanted, return_inverse=True)
        frames = self._decode(unique.tolist())
        if frames.shape[0] != len(unique):
            raise DataError(f"{self.name}: {len(unique)} frames asked for, {frames.shape[0]} decoded")
        return frames if np.array_equal(unique, wanted) else frames[inverse]

    @abstractmethod
    def _decode(self, indices: list[int]) -> np.ndarray:
        """The frames at sorted, distinct `indices`."""


class DecordVideo(VideoSource):
    def __init__(self, path: str | os.PathLike) -> None:
        import decord  # imported here so that importing the dataset package stays light

        path = Path(path)
        super().__init__(f"video {path}")
        if not path.is_file():
            raise DataError(f"video {path} does not exist")
        if path.stat().st_size == 0:
            raise DataError(f"video {path} is empty (0 bytes)")
        self._reader = self._guard(lambda: decord.VideoReader(str(path), num_threads=1))
        self.num_frames = self._guard(lambda: len(self._reader))
        if self.num_frames == 0:
            raise DataError(f"video {path} has no frames")

    def _decode(self, indices: list[int]) -> np.ndarray:
        return self._guard(lambda: self._reader.get_batch(indices).asnumpy())

    def _guard(self, fn):
        try:
            return fn()
        except Exception as err:  # decord raises its own DECORDError and RuntimeErrors
            reason = one_line(err, 200)
            raise DataError(f"{self.name} cannot be decoded: {reason}") from None


class _ImageFrames(VideoSource):
    """Frames stored as one image file each, listed in order in `self.frames`."""

    frames: list[str]

    def _decode(self, indices: list[int]) -> np.ndarray:
        images = [self._decode_one(self.frames[i]) for i in indices]
        if len({image.shape for image in images}) > 1:
            raise DataError(f"{self.name}: frames differ in size")
        return np.stack(images)

    def _decode_one(self, frame: str) -> np.ndarray:
        try:
            with Image.open(io.BytesIO(self._bytes(frame))) as image:
                return np.asarray(image.convert("RGB"))
        except DataError:
            raise
        except Exception as err:  # PIL raises UnidentifiedImageError, OSError, SyntaxError...
            reason = one_line(err, 200)
            raise DataError(f"{self.name}: frame {frame} cannot be decoded: {reason}") from None

    @abstractmethod
    def _bytes(self, frame: str) -> bytes: ...


class FrameFolder(_ImageFrames):
    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        super().__init__(f"frame folder {self.path}")
        if not self.path.is_dir():
            raise DataError(f"{self.name} does not exist")
        names = [e.name for e in os.scandir(self.path) if e.name.lower().endswith(IMAGE_SUFFIXES)]
        self.frames = sorted(names, key=natural_key)
        self.num_frames = len(self.frames)
        if not self.frames:
            raise DataError(f"{self.name} has no png/jpg frames")

    def _bytes(self, frame: str) -> bytes:
        try:
            return (self.path / frame).read_bytes()
        except OSError as err:
            raise DataError(f"{self.name}: frame {frame} cannot be read: {err.strerror}") from None


class ZipFrames(_ImageFrames):
    def __init__(self, zip_path: str, member: str) -> None:
        super().__init__(f"zip {zip_path}@{member}")
        self._zip, folders = _open_zip(zip_path)
        folder, _, pattern = member.strip("/").rpartition("/")
        if _PRINTF_FIELD.search(folder):
            raise DataError(f"{self.name}: the frame number may only be in the file name")
        if _PRINTF_FIELD.search(pattern):
            names = _matching(folders.get(folder, []), pattern)
        else:  # the member names a folder of frames
            folder = member.strip("/")
            names = sorted((n for n in folders.get(folder, []) if n.lower().endswith(IMAGE_SUFFIXES)),
                           key=natural_key)
        if not names:
            raise DataError(f"{self.name}: no frames in the archive match")
        self.frames = [f"{folder}/{n}" if folder else n for n in names]
        self.num_frames = len(self.frames)

    def _bytes(self, frame: str) -> bytes:
        try:
            return self._zip.read(frame)
        except (OSError, zipfile.BadZipFile) as err:
            raise DataError(f"{self.name}: frame {frame} cannot be read: {err}") from None


class NpzCrops(VideoSource):
    """The crops are loaded whole when opened: they are small (75 x 64 x 128 x 3 is 1.8 MB)."""

    def __init__(self, path: str | os.PathLike) -> None:
        path = Path(path)
        super().__init__(f"crops file {path}")
        if not path.is_file():
            raise DataError(f"{self.name} does not exist")
        try:
            with np.load(path, allow_pickle=False) as archive:  # no pickled objects: plain arrays only
                data = archive["data"]
        except Exception as err:  # numpy raises KeyError, ValueError, OSError, BadZipFile, EOFError...
            reason = one_line(err, 200)
            raise DataError(f"{self.name} cannot be read as preprocess_lip output: {reason}") from None
        gray, rgb = data.ndim == 3, data.ndim == 4 and data.shape[-1] == 3
        if data.dtype != np.uint8 or not (gray or rgb) or len(data) == 0:
            raise DataError(f"{self.name}: 'data' is {data.dtype} of shape {data.shape}, "
                            "expected uint8 T x H x W or T x H x W x 3 with T > 0")
        self._data = data
        self.num_frames = len(data)

    def _decode(self, indices: list[int]) -> np.ndarray:
        frames = self._data[indices]
        return np.repeat(frames[..., None], 3, axis=-1) if frames.ndim == 3 else frames


def open_video(spec: str | os.PathLike) -> VideoSource:
    """The video source that `spec` names (see the module docstring for the formats)."""
    spec = str(spec)
    zipped = _ZIP_SPEC.match(spec)
    if zipped:
        return ZipFrames(*zipped.groups())
    if spec.lower().endswith(".zip"):
        raise DataError(f"zip {spec}: name the frames as <zip path>@<member pattern or folder>")
    if spec.lower().endswith(".npz"):
        return NpzCrops(spec)
    if os.path.isdir(spec):
        return FrameFolder(spec)
    return DecordVideo(spec)


def read_video(
    path: str | os.PathLike, size: tuple[int, int] | None = None, max_frames: int | None = None
) -> np.ndarray:
    """Frames of any `open_video` source as T x H x W x 3 uint8 RGB.

    `size` (height, width) resizes after decoding (decord's own resizing mis-sizes some widths);
    `max_frames` keeps that many frames spread evenly over the video, in order.
    """
    source = open_video(path)
    frames = source.read(sample_indices(source.num_frames, max_frames))
    if size is not None and tuple(frames.shape[1:3]) != tuple(size):
        frames = resize_frames(frames, size)
    return frames


def resize_frames(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """T x H x W x C uint8 frames to T x height x width x C, bilinear with antialiasing.

    Stays in uint8 and channels-last, where torch has a fast kernel (5-7x the float path here).
    """
    x = torch.from_numpy(frames).permute(0, 3, 1, 2)
    x = torch.nn.functional.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
    return x.permute(0, 2, 3, 1).numpy()


def sample_indices(count: int, max_frames: int | None) -> Sequence[int]:
    if max_frames is None or count <= max_frames:
        return range(count)
    return np.linspace(0, count - 1, max_frames).round().astype(int).tolist()


def natural_key(name: str) -> list:
    """Sort key that compares digit runs as numbers: 'images9.png' < 'images10.png'."""
    return [int(part) if i % 2 else part for i, part in enumerate(re.split(r"(\d+)", name))]


_zips: dict[tuple[str, int], tuple[zipfile.ZipFile, dict[str, list[str]]]] = {}


def _open_zip(path: str) -> tuple[zipfile.ZipFile, dict[str, list[str]]]:
    """The archive and its file names by folder, opened once per process: a handle inherited
    through fork shares its file offset with the parent, so each worker opens its own."""
    key = (os.path.abspath(path), os.getpid())
    if key not in _zips:
        if not os.path.isfile(path):
            raise DataError(f"zip {path} does not exist")
        try:
            archive = zipfile.ZipFile(path)
        except (OSError, zipfile.BadZipFile) as err:
            raise DataError(f"zip {path} cannot be opened: {err}") from None
        folders: dict[str, list[str]] = {}
        for name in archive.namelist():
            folder, _, base = name.rpartition("/")
            if base:
                folders.setdefault(folder, []).append(base)
        _zips[key] = archive, folders
    return _zips[key]


def _matching(names: list[str], pattern: str) -> list[str]:
    """`names` that match a file pattern with one printf field (%d, %04d), ordered by its number."""
    field = _PRINTF_FIELD.search(pattern)
    head, tail = pattern[: field.start()], pattern[field.end():]
    digits = rf"\d{{{field.group(2)}}}" if field.group(1) and field.group(2) else r"\d+"
    regex = re.compile(re.escape(head) + f"({digits})" + re.escape(tail))
    numbered = [(int(m.group(1)), n) for n in names if (m := regex.fullmatch(n))]
    return [n for _, n in sorted(numbered)]
