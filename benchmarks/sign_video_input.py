"""Sign video input: decode + augment 224x224 training clips from mp4, frame folders and zips, side by side.

    python benchmarks/sign_video_input.py --quick          # under a minute on 2 CPU cores
    python benchmarks/sign_video_input.py --clips 4 --repeats 5
    python benchmarks/sign_video_input.py --clips 4 --repeats 5 --device cuda   # augmentation on a GPU

Generates its own clips (100 frames of 260 x 210, Phoenix's frame size, as mp4, png folders and a
zip of pngs) in a temporary folder. Every way takes the same training frame indices
(`temporal_indices`, tmin 0.5, tmax 1.5, same seed) and SLRT's Phoenix-2014T S2G augmentation
(crop area 0.7-1, ratio 0.75-1.3, colour jitter 0.4/0.4/0.4/0.1 on every clip by default: the
worst case) and ends at the float BGR [-1, 1] input of SLRT's S3D. "ours" is `open_video` + `stack_clips`
+ `augment_batch` + `to_model_input`; "loader stage" is its first half, the part our DataLoader
workers do (augmentation runs in the model's forward, on the GPU when training has one: `--device`);
the baseline reads PNGs from the zip with PIL and augments frame by frame in float as SLRT does;
"decord decode only" is the floor. Each repeat times every way, alternating the order; the medians
and ratios are printed. Torch runs on one thread by default, as in a DataLoader worker (on a shared
2-core machine two threads made the per-frame baseline erratic).
"""
from __future__ import annotations

import argparse
import io
import statistics
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import av
import numpy as np
import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dataset.transforms import (  # noqa: E402
    augment_batch, augmentation_config, crop_box, stack_clips, temporal_indices, to_model_input)
from dataset.video import open_video  # noqa: E402

FRAMES, HEIGHT, WIDTH = 100, 260, 210


def make_clip(seed: int) -> np.ndarray:
    """A signer-like scene: a gradient background, a torso, two moving hands and camera noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:HEIGHT, :WIDTH]
    base = np.stack([60 + yy * 0.3, 80 + xx * 0.2, 120 + 0 * yy], -1)
    base[(np.abs(xx - WIDTH / 2) < 60) & (yy > 120)] = (30, 30, 90)
    frames = np.empty((FRAMES, HEIGHT, WIDTH, 3), np.uint8)
    for t in range(FRAMES):
        frame = base.copy()
        for phase, colour in ((0.0, (220, 180, 150)), (2.0, (230, 190, 160))):
            cy, cx = 150 + 50 * np.sin(t / 9 + phase), WIDTH / 2 + 60 * np.cos(t / 7 + phase)
            frame[(yy - cy) ** 2 + (xx - cx) ** 2 < 18 ** 2] = colour
        frames[t] = np.clip(frame + rng.normal(0, 3, frame.shape), 0, 255)
    return frames


def write_sources(root: Path, count: int) -> list[dict[str, str]]:
    sources = []
    with zipfile.ZipFile(root / "frames.zip", "w", zipfile.ZIP_STORED) as archive:
        for i in range(count):
            clip, folder = make_clip(i), root / f"clip{i}"
            folder.mkdir()
            with av.open(str(root / f"clip{i}.mp4"), "w") as container:
                stream = container.add_stream("libx264", rate=25)
                stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
                for frame in clip:
                    container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
                container.mux(stream.encode())
            for t, frame in enumerate(clip, start=1):
                Image.fromarray(frame).save(folder / f"images{t:04d}.png")
                archive.write(folder / f"images{t:04d}.png", f"images/clip{i}/images{t:04d}.png")
            sources.append({"mp4": str(root / f"clip{i}.mp4"), "folder": str(folder),
                            "zip": f"{root / 'frames.zip'}@images/clip{i}/images%04d.png"})
    return sources


def loader_stage(spec: str, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """What our DataLoader workers do: decode the training frame indices and batch them as uint8."""
    source = open_video(spec)
    return stack_clips([source.read(temporal_indices(source.num_frames, True, generator=generator))])


def ours(spec: str, cfg: dict, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """The loader stage, then what RecognitionNetwork.forward does on the training device."""
    video, lengths = loader_stage(spec, generator)
    video, colours = augment_batch(video.to(device), lengths, cfg, True, generator)
    out = to_model_input(video, "slrt_bgr", colours)
    if device.type == "cuda":
        torch.cuda.synchronize(device)  # the clip is ready only when its kernels have run
    return out


def slrt_way(spec: str, cfg: dict, generator: torch.Generator, archives: dict) -> torch.Tensor:
    """SLRT's path: PIL per frame from a cached ZipFile, float tensors, per-frame jitter and crop."""
    zip_path, pattern = spec.split("@")
    archive = archives.setdefault(zip_path, zipfile.ZipFile(zip_path))
    indices = temporal_indices(FRAMES, True, generator=generator)
    frames = [torch.from_numpy(np.array(Image.open(io.BytesIO(archive.read(pattern % (i + 1)))).convert("RGB")))
              .permute(2, 0, 1).float() / 255 for i in indices]
    jitter = cfg["color_jitter"]
    factors = [1 + jitter[k] * (2 * float(torch.rand(1, generator=generator)) - 1)
               for k in ("brightness", "contrast", "saturation")]
    hue = jitter["hue"] * (2 * float(torch.rand(1, generator=generator)) - 1)
    top, left, h, w = crop_box(HEIGHT, WIDTH, cfg["crop_scale"], cfg["crop_ratio"], generator)
    jittered = float(torch.rand(1, generator=generator)) < jitter["p"]
    out = []
    for frame in frames:
        if jittered:
            frame = TF.adjust_hue(TF.adjust_saturation(TF.adjust_contrast(TF.adjust_brightness(
                frame, factors[0]), factors[1]), factors[2]), hue)
        frame = TF.resized_crop(frame, top, left, h, w, [cfg["img_size"]] * 2, antialias=True)
        out.append((frame[[2, 1, 0]] - 0.5) / 0.5)
    return torch.stack(out, 1)[None]


def clips_per_second(fn, specs: list[str], seed: int) -> float:
    generator = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    for spec in specs:
        fn(spec, generator)
    return len(specs) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--clips", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--jitter-p", type=float, default=1.0, help="colour jitter probability (SLRT: 0.3)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1, as in a DataLoader worker)")
    parser.add_argument("--device", default="cpu", help="where our augmentation runs, as the training device "
                        "(cuda: the decode stays on the CPU, as in our DataLoader workers)")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    count, repeats = (1, 3) if args.quick else (args.clips, args.repeats)
    sources = write_sources(Path(tempfile.mkdtemp()), count)
    cfg = augmentation_config({"color_jitter": {"p": args.jitter_p}})
    archives: dict = {}
    ways = {
        "decord decode only": ([s["mp4"] for s in sources], lambda spec, g: open_video(spec).read(range(FRAMES))),
        "ours, mp4": ([s["mp4"] for s in sources], lambda spec, g: ours(spec, cfg, g, device)),
        "ours, png folder": ([s["folder"] for s in sources], lambda spec, g: ours(spec, cfg, g, device)),
        "ours, zip of png": ([s["zip"] for s in sources], lambda spec, g: ours(spec, cfg, g, device)),
        "loader stage, mp4": ([s["mp4"] for s in sources], loader_stage),
        "loader stage, zip": ([s["zip"] for s in sources], loader_stage),
        "SLRT way, zip of png": ([s["zip"] for s in sources], lambda spec, g: slrt_way(spec, cfg, g, archives)),
    }
    rates: dict[str, list[float]] = {name: [] for name in ways}
    for r in range(repeats):
        for name in (list(ways) if r % 2 == 0 else list(reversed(ways))):
            rates[name].append(clips_per_second(ways[name][1], ways[name][0], seed=r))
    medians = {name: statistics.median(values) for name, values in rates.items()}
    print(f"{count} clips of {FRAMES} frames {HEIGHT}x{WIDTH} -> training input 224x224, colour jitter p "
          f"{args.jitter_p}, torch threads {torch.get_num_threads()}, our augmentation on {device}, {repeats} "
          "repeats (median):")
    for name, value in medians.items():
        print(f"  {name:<22} {value:7.2f} clips/s  {value / medians['SLRT way, zip of png']:5.2f}x SLRT way"
              f"  {value / medians['decord decode only']:5.2f} of decode only")


if __name__ == "__main__":
    main()
