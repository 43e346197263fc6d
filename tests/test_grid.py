"""GRID as users have it: raw `.mpg` videos, LipNet-PyTorch's jpg mouth frames, preprocess_lip's `.npz`
crops, `GRID_align_txt` alignments and LipNet-PyTorch's split lists, read through the LipNet configs."""
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dataset import build_dataset
from dataset.synthetic import write_video
from utils.config import load_config

ROOT = Path(__file__).resolve().parents[1]
FRAMES, HEIGHT, WIDTH = 12, 64, 128  # 12 frames: '10.jpg' sorts before '2.jpg' as a string
SAMPLES = [("s1", "bbaf2n"), ("s2", "lgaz8p")]
ALIGN = "0 23750 sil\n23750 29500 bin\n29500 34000 blue\n34000 35500 at\n35500 74500 sil\n"
PATTERNS = {  # the layouts experiments/configs/LipNet/grid_overlap.yaml names; None: its default
    "LipNet-PyTorch jpg frames": None,
    "preprocess_lip crops": "lip_crops/{speaker}/{id}.npz",
    "raw mpg videos": "video/{speaker}/{id}.mpg",
}


def clip(sample: int) -> np.ndarray:
    """Red ramps up over time, a green bar per sample: order, channels and sample are all visible."""
    frames = np.zeros((FRAMES, HEIGHT, WIDTH, 3), np.uint8)
    frames[..., 0] = (20 * np.arange(FRAMES))[:, None, None]
    frames[:, 16:48, 32 * sample + 16: 32 * sample + 48, 1] = 200
    return frames


@pytest.fixture(scope="module")
def grid_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("GRID")
    lines = []
    for n, (speaker, vid) in enumerate(SAMPLES):
        frames = clip(n)
        folder = root / "lip" / speaker / "video" / "mpg_6000" / vid
        folder.mkdir(parents=True)
        for t, frame in enumerate(frames):
            Image.fromarray(frame).save(folder / f"{t}.jpg", quality=95)
        (root / "lip_crops" / speaker).mkdir(parents=True)
        np.savez(root / "lip_crops" / speaker / f"{vid}.npz", data=frames, centers=np.zeros((FRAMES, 2), np.float32))
        (root / "video" / speaker).mkdir(parents=True)
        write_video(root / "video" / speaker / f"{vid}.mpg", frames, "mpg")
        (root / "GRID_align_txt" / speaker / "align").mkdir(parents=True)
        (root / "GRID_align_txt" / speaker / "align" / f"{vid}.align").write_text(ALIGN)
        lines.append(f"{speaker}/video/mpg_6000/{vid}")  # LipNet-PyTorch's split list lines
    (root / "overlap_train.txt").write_text("\n".join(lines) + "\n")
    return root


@pytest.mark.parametrize("layout", list(PATTERNS))
@pytest.mark.parametrize("recipe", ["grid_overlap", "grid_unseen"])
def test_each_documented_layout_gives_the_same_bgr_frames_in_order(grid_root, layout, recipe):
    opts = [f"data.root={grid_root}", f"data.train={grid_root / 'overlap_train.txt'}",
            f"data.dev={grid_root / 'overlap_train.txt'}"]
    if PATTERNS[layout]:
        opts.append(f"data.video_pattern={PATTERNS[layout]}")
    cfg = load_config(ROOT / f"experiments/configs/LipNet/{recipe}.yaml", opts)
    dataset = build_dataset(cfg, "dev")
    assert [dataset.name(i) for i in range(len(dataset))] == ["s1/bbaf2n", "s2/lgaz8p"]
    for n in range(len(SAMPLES)):
        sample = dataset[n]
        assert sample["text"] == "BIN BLUE AT"
        video = sample["video"].numpy()  # C x T x H x W, BGR as published LipNet checkpoints expect
        assert video.shape == (3, FRAMES, HEIGHT, WIDTH) and video.dtype == np.uint8
        expected = clip(n)[..., ::-1].transpose(3, 0, 1, 2)
        assert np.abs(video.astype(int) - expected).mean() < 4  # lossy jpg and mpg
        assert (np.diff(video[2, :, 4, 4].astype(int)) > 0).all()  # red, last in BGR, ramps up: frames in order
