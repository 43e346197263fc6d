import os
import zipfile

import av
import numpy as np
import pytest
from PIL import Image

from dataset import video
from dataset.video import open_video
from utils.errors import DataError

FRAMES = 12  # more than 10, so string order and number order differ


@pytest.fixture(scope="module")
def clip() -> np.ndarray:
    """Flat colours (kind to lossy codecs) that change every frame: red ramps, a square moves."""
    frames = np.zeros((FRAMES, 48, 64, 3), np.uint8)
    for t in range(FRAMES):
        frames[t, :, :, 0] = 20 * t
        frames[t, 8:24, 4 * t: 4 * t + 16, 1] = 200
    return frames


@pytest.fixture(scope="module")
def sources(clip, tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("sources")
    with av.open(str(root / "clip.mp4"), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.options = {"crf": "10"}
        for frame in clip:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    (root / "frames").mkdir()
    with zipfile.ZipFile(root / "clips.zip", "w") as archive:
        for t, frame in enumerate(clip, start=1):
            Image.fromarray(frame).save(root / "frames" / f"images{t}.png")  # unpadded: images10 < images9
            archive.write(root / "frames" / f"images{t}.png", f"images/clip/images{t:04d}.png")
    centers = np.zeros((FRAMES, 2), np.float32)
    np.savez(root / "clip.npz", data=clip, centers=centers)  # as dataset.preprocess_lip writes them
    np.savez(root / "gray.npz", data=clip[..., 0], centers=centers)
    return {"mp4": str(root / "clip.mp4"), "folder": str(root / "frames"),
            "zip pattern": f"{root / 'clips.zip'}@images/clip/images%04d.png",
            "zip folder": f"{root / 'clips.zip'}@images/clip", "npz": str(root / "clip.npz"),
            "gray npz": str(root / "gray.npz")}


@pytest.mark.parametrize("kind", ["mp4", "folder", "zip pattern", "zip folder", "npz"])
def test_every_source_reads_back_the_clip_in_order(clip, sources, kind):
    source = open_video(sources[kind])
    assert source.num_frames == FRAMES
    frames = source.read(range(FRAMES))
    assert frames.shape == clip.shape and frames.dtype == np.uint8
    error = np.abs(frames.astype(int) - clip).mean(axis=(1, 2, 3))
    assert (error < 3).all() if kind == "mp4" else (error == 0).all()


@pytest.mark.parametrize("kind", ["mp4", "zip pattern", "npz"])
def test_read_decodes_the_asked_frames_in_the_asked_order(clip, sources, kind):
    frames = open_video(sources[kind]).read([11, 0, 5, 5])
    assert np.abs(frames.astype(int) - clip[[11, 0, 5, 5]]).mean() < 3


def test_grayscale_crops_read_as_three_equal_channels(clip, sources):
    frames = open_video(sources["gray npz"]).read([3, 7])
    assert frames.shape == (2, 48, 64, 3) and frames.dtype == np.uint8
    assert (frames == clip[[3, 7], :, :, :1]).all()


def test_zip_is_opened_once_per_process(sources, monkeypatch):
    first, second = open_video(sources["zip pattern"]), open_video(sources["zip folder"])
    assert first._zip is second._zip
    pid = os.getpid()
    monkeypatch.setattr(video.os, "getpid", lambda: pid + 1)  # as in a forked worker
    assert open_video(sources["zip pattern"])._zip is not first._zip


def bad_source(tmp_path, sources, problem) -> str:
    if problem == "missing video":
        return str(tmp_path / "none.mp4")
    if problem == "missing npz":
        return str(tmp_path / "none.npz")
    if problem == "missing folder":
        return str(tmp_path / "none")
    if problem == "empty folder":
        (tmp_path / "empty").mkdir()
        return str(tmp_path / "empty")
    if problem == "missing zip":
        return f"{tmp_path / 'none.zip'}@images/clip/images%04d.png"
    if problem == "not a zip":
        (tmp_path / "text.zip").write_text("not a zip\n")
        return f"{tmp_path / 'text.zip'}@images/clip"
    if problem == "zip without the frames":
        return sources["zip pattern"].replace("images/clip/", "images/other/")
    if problem == "zip without member":
        return sources["zip pattern"].split("@")[0]
    if problem.startswith("npz"):
        arrays = {"npz without data": {"crops": np.zeros((2, 4, 4), np.uint8)},
                  "npz of floats": {"data": np.zeros((2, 4, 4), np.float32)},
                  "npz of one image": {"data": np.zeros((4, 4), np.uint8)},
                  "npz holding a pickled object": {"data": np.array([{"a": 1}], dtype=object)}}[problem]
        np.savez(tmp_path / "bad.npz", **arrays)
        return str(tmp_path / "bad.npz")
    if problem == "text as npz":
        (tmp_path / "text.npz").write_text("not an archive\n")
        return str(tmp_path / "text.npz")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "images1.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    return str(tmp_path / "broken")


@pytest.mark.parametrize("problem", ["missing video", "missing folder", "empty folder", "missing zip",
                                     "not a zip", "zip without the frames", "zip without member",
                                     "unreadable frame", "missing npz", "npz without data", "npz of floats",
                                     "npz of one image", "npz holding a pickled object", "text as npz"])
def test_bad_sources_raise_one_line_naming_the_source(tmp_path, sources, problem):
    spec = bad_source(tmp_path, sources, problem)
    with pytest.raises(DataError) as err:
        open_video(spec).read([0])
    message = str(err.value)
    assert spec.split("@")[0] in message and "\n" not in message


def test_frames_out_of_range_are_a_data_error(sources):
    with pytest.raises(DataError, match=f"frame {FRAMES} asked for"):
        open_video(sources["folder"]).read([0, FRAMES])
