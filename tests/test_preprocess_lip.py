"""Mouth crops on a real face: scikit-image's astronaut photograph (Eileen Collins) made into short mp4 and
mpg videos with small shifts, through mediapipe's face mesh."""
import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest

from dataset.preprocess_lip import CropSpec, crop, fill_gaps, main, preprocess, smooth
from dataset.synthetic import write_video
from utils.errors import DataError, UserError

needs_mediapipe = pytest.mark.skipif(importlib.util.find_spec("mediapipe") is None,
                                     reason="mediapipe is not installed: pip install -e '.[lip]'")

# Located by hand in skimage.data.astronaut() (512 x 512), on a 10x enlargement with a 5 px grid: the mouth
# corners at (203, 140) and (244, 141), the top of the upper lip at y 137, the bottom of the lower lip at
# y 153; the middle of those is (223.5, 145).
MOUTH = np.array([223.5, 145.0])
SIDE = 448  # each frame is a 448 x 448 window of the photograph


def astronaut_video(path: Path, frames: int, kind: str = "mp4", noise_at: tuple[int, ...] = ()) -> np.ndarray:
    """Windows drifting 2 px right and 1 px down per frame (the face moves the other way); returns the
    window offsets (x, y). Frames in `noise_at` are replaced by noise: no face in them."""
    from skimage.data import astronaut

    image, rng = astronaut(), np.random.default_rng(0)
    offsets = np.array([(2 * t, t) for t in range(frames)])
    video = np.stack([image[y:y + SIDE, x:x + SIDE] for x, y in offsets])
    video[list(noise_at)] = rng.integers(0, 256, (len(noise_at), SIDE, SIDE, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_video(path, video, kind)
    return offsets


@needs_mediapipe
def test_astronaut_crops_are_centred_on_her_mouth_and_follow_it(tmp_path):
    offsets = astronaut_video(tmp_path / "in" / "astronaut.mp4", 10)
    [outcome] = preprocess(tmp_path / "in" / "astronaut.mp4", tmp_path / "out", CropSpec(96, 96, gray=True))
    assert (outcome.status, outcome.frames, outcome.filled) == ("written", 10, 0)
    with np.load(tmp_path / "out" / "astronaut.npz", allow_pickle=False) as archive:
        assert sorted(archive.files) == ["centers", "data"]
        data, centers = archive["data"], archive["centers"]
    assert data.shape == (10, 96, 96) and data.dtype == np.uint8
    assert centers.shape == (10, 2) and centers.dtype == np.float32
    in_photo = centers + offsets  # back in the photograph's pixels
    assert np.abs(in_photo - MOUTH).max() < 3, in_photo
    # The face moves 20 px in all: crops that follow the mouth stay alike, closer to the first than the first
    # is to itself moved by 4 x 2 px
    change = np.abs(data[1:].astype(int) - data[0]).mean(axis=(1, 2))
    moved = np.abs(data[0, 2:, 4:].astype(int) - data[0, :-2, :-4]).mean()
    assert change.max() < moved / 2, (change, moved)
    assert not list(tmp_path.rglob("*.tmp"))


@needs_mediapipe
def test_a_tree_is_mirrored_in_parallel_and_a_second_run_writes_nothing(tmp_path, capsys):
    inp, out = tmp_path / "GRID" / "video", tmp_path / "GRID" / "lip_crops"
    astronaut_video(inp / "s1" / "bbaf2n.mpg", 12, "mpg")  # decord cannot read the end of a shorter one
    astronaut_video(inp / "s2" / "takes" / "lgaz8p.mp4", 5)
    (inp / "s1" / "notes.txt").write_text("not a video\n")
    args = ["--input", str(inp), "--output", str(out), "--height", "64", "--width", "128", "--workers", "2"]
    assert main(args) == 0
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert written == ["s1/bbaf2n.npz", "s2/takes/lgaz8p.npz"]
    for name, frames in (("s1/bbaf2n.npz", 12), ("s2/takes/lgaz8p.npz", 5)):
        with np.load(out / name, allow_pickle=False) as archive:
            assert archive["data"].shape == (frames, 64, 128, 3) and archive["data"].dtype == np.uint8
    assert "2 videos: 2 written, 0 kept" in capsys.readouterr().out

    before = {p: os.stat(p).st_mtime_ns for p in out.rglob("*.npz")}
    assert main(args) == 0
    assert {p: os.stat(p).st_mtime_ns for p in out.rglob("*.npz")} == before
    assert "2 videos: 0 written, 2 kept" in capsys.readouterr().out

    (out / "s1" / "bbaf2n.npz").write_bytes((out / "s1" / "bbaf2n.npz").read_bytes()[:100])  # killed mid-copy
    assert main(args[:-2]) == 0
    assert "2 videos: 1 written, 1 kept" in capsys.readouterr().out
    with np.load(out / "s1" / "bbaf2n.npz", allow_pickle=False) as archive:
        assert archive["data"].shape == (12, 64, 128, 3)


@needs_mediapipe
def test_a_video_without_a_face_is_reported_and_nothing_is_written(tmp_path, capsys):
    noise = np.random.default_rng(1).integers(0, 256, (6, 128, 128, 3), dtype=np.uint8)
    write_video(tmp_path / "noise.mp4", noise, "mp4")
    assert main(["--input", str(tmp_path / "noise.mp4"), "--output", str(tmp_path / "out"), "--size", "96"]) == 1
    out = capsys.readouterr().out
    assert f"{tmp_path / 'noise.mp4'}: no face found in any of its 6 frames; skipped, nothing written" in out
    assert "1 videos: 0 written, 0 kept from an earlier run, 1 without a face" in out
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


@needs_mediapipe
def test_frames_without_a_face_in_the_middle_are_filled_from_their_neighbours_and_counted(tmp_path, capsys):
    offsets = astronaut_video(tmp_path / "gap.mp4", 9, noise_at=(4, 5))
    [outcome] = preprocess(tmp_path / "gap.mp4", tmp_path / "out", CropSpec(96, 96))
    assert (outcome.status, outcome.frames, outcome.filled) == ("written", 9, 2)
    assert f"{tmp_path / 'gap.mp4'}: 2 of 9 frames without a face, filled from their neighbours" in capsys.readouterr().out
    with np.load(tmp_path / "out" / "gap.npz", allow_pickle=False) as archive:
        assert archive["data"].shape == (9, 96, 96, 3)
        assert np.abs(archive["centers"] + offsets - MOUTH).max() < 3


def test_gaps_are_interpolated_and_smoothing_keeps_a_steady_drift():
    track = np.array([[0, 10], [np.nan, np.nan], [4, 14], [np.nan, np.nan], [np.nan, np.nan], [10, 20]], float)
    filled = fill_gaps(track)
    assert np.allclose(filled, [[0, 10], [2, 12], [4, 14], [6, 16], [8, 18], [10, 20]])
    assert np.allclose(fill_gaps(np.array([[np.nan, np.nan], [3, 4], [np.nan, np.nan]])), [[3, 4]] * 3)
    assert np.allclose(smooth(filled, 5), filled)  # a straight line stays put, at the ends too
    jitter = filled + np.array([[1, -1], [-1, 1]] * 3)
    assert np.abs(smooth(jitter, 3) - filled)[1:-1].max() < 0.5


def test_crops_beyond_the_frame_repeat_its_edge():
    frames = np.arange(4 * 6, dtype=np.uint8).reshape(1, 4, 6, 1) * np.ones((1, 1, 1, 3), np.uint8)
    corner = crop(frames, [(0.0, 0.0)], (2, 4))[0, ..., 0]
    assert (corner == [[0, 0, 0, 1], [0, 0, 0, 1]]).all()


def test_a_missing_input_or_a_folder_without_videos_is_one_error(tmp_path, capsys):
    with pytest.raises(UserError, match=f"input {tmp_path / 'none'} does not exist"):
        preprocess(tmp_path / "none", tmp_path / "out", CropSpec(96, 96))
    (tmp_path / "empty").mkdir()
    assert main(["--input", str(tmp_path / "empty"), "--output", str(tmp_path / "out"), "--size", "96"]) == 2
    assert f"error: input {tmp_path / 'empty'} holds no videos" in capsys.readouterr().err


def test_protobuf_users_import_under_the_lip_extras_protobuf():
    """mediapipe 0.10.14 pins protobuf < 5: tensorboard's event protos and the sentencepiece model proto that
    transformers converts slow mBART tokenizers with must still import (requirements.txt picks versions for it)."""
    from tensorboard.compat.proto import event_pb2
    from transformers.convert_slow_tokenizer import import_protobuf

    model = import_protobuf().ModelProto()
    model.pieces.add(piece="▁GUTEN", score=-1.0)
    assert import_protobuf().ModelProto.FromString(model.SerializeToString()).pieces[0].piece == "▁GUTEN"
    assert event_pb2.Event(step=3).step == 3


@needs_mediapipe
def test_a_lip_model_reads_a_full_face_video_through_its_mouth_crops(tmp_path):
    from dataset.grid import read_user_video
    from dataset.lrw import read_user_video as read_word_video
    from dataset.preprocess_lip import MouthFinder, mouth_crops
    from dataset.video import open_video

    astronaut_video(tmp_path / "face.mp4", 6)
    input_cfg = {"height": 64, "width": 128, "channel_order": "RGB", "max_frames": 75}
    video = read_user_video(str(tmp_path / "face.mp4"), input_cfg)  # square frames are not a 64 x 128 crop
    crops, _, _ = mouth_crops(open_video(str(tmp_path / "face.mp4")), MouthFinder(), CropSpec(64, 128))
    assert video.shape == (3, 6, 64, 128) and np.array_equal(video.permute(1, 2, 3, 0).numpy(), crops)
    # A word model's square input: the square frames pass for a crop unless cropping is asked for. The roi, larger
    # than the frames, would be an error if the mouth crops did not stand in for it.
    word_cfg = {"data": {"input": {"frame_size": 24, "crop_size": 20, "max_frames": 29, "roi": [0, 0, 600, 600]},
                         "word_boundary": False}, "model": {"EfLip": {"in_channels": 1}}}
    word = read_word_video(str(tmp_path / "face.mp4"), word_cfg, crop_mouth="yes")["video"]
    grey, _, _ = mouth_crops(open_video(str(tmp_path / "face.mp4")), MouthFinder(), CropSpec(24, 24, gray=True))
    assert word.shape == (1, 6, 20, 20) and np.array_equal(word[0].numpy(), grey[:, 2:22, 2:22])
    noise = np.random.default_rng(0).integers(0, 256, (6, 96, 96, 3), dtype=np.uint8)
    write_video(tmp_path / "noise.mp4", noise, "mp4")
    with pytest.raises(DataError, match=r"noise\.mp4: no face found"):
        read_user_video(str(tmp_path / "noise.mp4"), input_cfg)
