"""Sign video augmentation as in SLRT (SingleStream/TwoStream-SLT), on uint8 batches on any device.

Temporal resampling works on frame indices, before decoding (`temporal_indices`); the spatial and
colour steps work on a padded uint8 batch B x C x T x H x W with per-sample lengths
(`augment_batch`), and `to_model_input` makes the float input a backbone expects, applying the colour
jitter as it does. All randomness comes from one CPU `torch.Generator`, so a seed gives the same output
on the CPU and on a GPU.

`augment_batch`'s cfg keys (missing keys take `DEFAULT_AUGMENTATION`, SLRT's Phoenix-2014T S2G):
    img_size      output side; clips come out img_size x img_size
    crop_scale    [min, max] area fraction of the RandomResizedCrop box (SLRT `bottom_area`, 1.0)
    crop_ratio    [min, max] width / height of the box (SLRT `aspect_ratio_min/max`)
    color_jitter  {p, brightness, contrast, saturation, hue}: probability per clip and the
                  torchvision ColorJitter strengths; p 0 turns it off
    hflip         probability of flipping a clip left-right (SLRT `aug_hflip`: off for signs)
    eval_crop     evaluation: centre box of this fraction of the height and of the width, resized
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from utils.errors import ConfigError

DEFAULT_AUGMENTATION: dict[str, Any] = {
    "img_size": 224,
    "crop_scale": [0.7, 1.0],
    "crop_ratio": [0.75, 1.3],
    "color_jitter": {"p": 0.3, "brightness": 0.4, "contrast": 0.4, "saturation": 0.4, "hue": 0.1},
    "hflip": 0.0,
    "eval_crop": 1.0,
}
CONVENTIONS = ("slrt_bgr", "torchvision_rgb")
_KINETICS_MEAN = (0.43216, 0.394666, 0.37645)
_KINETICS_STD = (0.22803, 0.22145, 0.216989)
_GRAY = torch.tensor([0.2989, 0.587, 0.114])  # torchvision's rgb_to_grayscale weights


def temporal_indices(
    num_frames: int, train: bool, tmin: float = 0.5, tmax: float = 1.5, max_frames: int = 400,
    generator: torch.Generator | None = None,
) -> list[int]:
    """Frame indices to decode, in order, a multiple of 4 long and at most `max_frames`.

    Training draws a length U[tmin, tmax] x num_frames, rounded to a multiple of 4, and spreads it
    evenly over the clip from a random phase (repeating frames when longer than the clip).
    Evaluation keeps every frame (spread evenly over the clip when over the cap) and repeats the
    last one up to a multiple of 4. (SLRT draws a random sorted subset instead of an even spread,
    and cuts evaluation clips down to a multiple of 4.)
    """
    if num_frames < 1:
        raise ValueError(f"a clip needs frames, got {num_frames}")
    cap = max_frames - max_frames % 4
    if cap < 4:
        raise ValueError(f"max_frames must be at least 4, got {max_frames}")
    if not train:
        length = min(num_frames, cap)
        picked = np.linspace(0, num_frames - 1, length).round().astype(int).tolist()
        return picked + picked[-1:] * (-length % 4)
    u, phase = torch.rand(2, generator=generator).tolist()
    length = min(cap, max(4, 4 * round((tmin + u * (tmax - tmin)) * num_frames / 4)))
    return ((np.arange(length) + phase) * num_frames / length).astype(int).tolist()


def stack_clips(clips: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """T_i x H x W x 3 uint8 clips to a zero-padded B x 3 x T x H x W uint8 batch and the lengths.

    The batch is a channels-last view (memory order B, T, H, W, C), the layout of the fast uint8
    resize on the CPU.
    """
    if len({clip.shape[1:] for clip in clips}) != 1:
        raise ValueError(f"clips differ in frame size: {sorted({c.shape[1:] for c in clips})}")
    lengths = torch.tensor([len(clip) for clip in clips])
    batch = torch.zeros((len(clips), int(lengths.max()), *clips[0].shape[1:]), dtype=torch.uint8)
    for b, clip in enumerate(clips):
        batch[b, : len(clip)] = torch.from_numpy(clip)
    return batch.permute(0, 4, 1, 2, 3), lengths


Colour = tuple[torch.Tensor, torch.Tensor]  # 3 x 3 matrix, T x 3 offset: clamp(matrix @ rgb + offset, 0, 255)


def augment_batch(
    video: torch.Tensor, lengths: torch.Tensor, cfg: dict[str, Any] | None, train: bool,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, list[Colour | None]]:
    """B x C x T x H x W uint8 -> B x C x T x S x S uint8 (S = img_size) on video's device, and colours.

    Training: one RandomResizedCrop box, one colour jitter and one flip decision per clip, the same
    for all of its frames; evaluation: the centre crop, resized. Frames past a clip's length stay 0.
    The colour jitter of clip b is returned as colours[b] (None: not jittered), for `to_model_input`
    to apply as it makes the floats, so that no clip is converted to floats twice.
    """
    cfg = augmentation_config(cfg)
    size = cfg["img_size"]
    batch, channels, frames, height, width = video.shape
    out = torch.zeros((batch, frames, size, size, channels), dtype=torch.uint8, device=video.device)
    out = out.permute(0, 4, 1, 2, 3)
    colours: list[Colour | None] = [None] * batch
    for b in range(batch):
        if int(lengths[b]) == 0:
            continue
        clip = video[b, :, : int(lengths[b])].transpose(0, 1)  # T x C x H x W
        if train:
            top, left, h, w = crop_box(height, width, cfg["crop_scale"], cfg["crop_ratio"], generator)
        else:
            h, w = round(height * cfg["eval_crop"]), round(width * cfg["eval_crop"])
            top, left = (height - h) // 2, (width - w) // 2
        clip = _resize(clip[:, :, top: top + h, left: left + w], size)
        if train:
            jitter = cfg["color_jitter"]
            if float(torch.rand(1, generator=generator)) < jitter["p"]:
                colours[b] = color_jitter(clip, jitter, generator)
            if float(torch.rand(1, generator=generator)) < cfg["hflip"]:
                clip = clip.flip(-1)
        out[b, :, : clip.shape[0]] = clip.transpose(0, 1)
    return out, colours


def to_model_input(video: torch.Tensor, convention: str, colours: list[Colour | None] | None = None
                   ) -> torch.Tensor:
    """uint8 B x C(RGB) x T x H x W -> float32 in the layout and scale a backbone was trained with.

    slrt_bgr: BGR in [-1, 1] (SLRT's S3D); torchvision_rgb: RGB with Kinetics mean/std (torchvision's
    video models). colours[b] (from `augment_batch`) recolours the first frames of clip b it covers.
    The output keeps the batch's channels-last layout: S3D's forward and backward ran 1.18x faster on
    it than on the default layout on a CPU.
    """
    if convention not in CONVENTIONS:
        raise ConfigError(f"unknown input convention {convention!r}; known: {', '.join(CONVENTIONS)}")
    out = torch.empty(video.shape, dtype=torch.float32, device=video.device, memory_format=torch.channels_last_3d)
    if colours is None or all(colour is None for colour in colours):
        _convert(video, convention, out)
        return out
    for b, colour in enumerate(colours):
        recoloured = 0 if colour is None else len(colour[1])
        if recoloured:
            _recolour(video[b, :, :recoloured], convention, colour, out[b, :, :recoloured])
        if recoloured < video.shape[2]:
            _convert(video[b, :, recoloured:], convention, out[b, :, recoloured:])
    return out


def _convert(video: torch.Tensor, convention: str, out: torch.Tensor) -> None:
    """Channels at dim -4, uint8 -> out in the convention's scale, element by element over the whole batch."""
    # Copy, then scale in place: a mixed uint8-float op is not vectorised and measured slower.
    if convention == "slrt_bgr":  # flipping uint8 moves a quarter of the bytes
        out.copy_(video.flip(-4)).mul_(2 / 255).sub_(1)
    else:
        mean = torch.tensor(_KINETICS_MEAN, device=video.device).view(3, 1, 1, 1)
        std = torch.tensor(_KINETICS_STD, device=video.device).view(3, 1, 1, 1)
        out.copy_(video).sub_(255 * mean).div_(255 * std)


def _recolour(clip: torch.Tensor, convention: str, colour: Colour, out: torch.Tensor) -> None:
    """C x T x H x W uint8 -> out: the colour jitter and the convention's scaling as one affine map per output
    channel, written plane by plane straight from uint8 (no float copy of the clip, no uint8 round trip)."""
    if convention == "slrt_bgr":
        scale, shift = torch.full((3,), 2 / 255, dtype=torch.float64), torch.full((3,), -1.0, dtype=torch.float64)
        source = torch.eye(3, dtype=torch.float64).flip(0)  # output channel d reads input channel 2 - d
    else:
        std, mean = torch.tensor(_KINETICS_STD, dtype=torch.float64), torch.tensor(_KINETICS_MEAN, dtype=torch.float64)
        scale, shift, source = 1 / (255 * std), -mean / std, torch.eye(3, dtype=torch.float64)
    scaling = scale[:, None] * source
    matrix, offset = scaling @ colour[0], (colour[1] @ scaling.T + shift).T
    offset = offset.to(out.device, torch.float32)[:, :, None, None]  # 3 x T x 1 x 1
    for d in range(3):
        terms = [(c, float(matrix[d, c])) for c in range(3) if matrix[d, c] != 0] or [(0, 0.0)]
        (first, weight), rest = terms[0], terms[1:]
        torch.add(offset[d], clip[first], alpha=weight, out=out[d])
        for c, weight in rest:
            out[d].add_(clip[c], alpha=weight)
        out[d].clamp_(float(shift[d]), float(shift[d] + 255 * scale[d]))  # the jitter's clamp to [0, 255]


def augmentation_config(cfg: dict[str, Any] | None) -> dict[str, Any]:
    """`cfg` over `DEFAULT_AUGMENTATION`; unknown keys are a ConfigError."""
    cfg = dict(cfg or {})
    unknown = set(cfg) - set(DEFAULT_AUGMENTATION)
    unknown |= {f"color_jitter.{k}" for k in cfg.get("color_jitter", {})} - {
        f"color_jitter.{k}" for k in DEFAULT_AUGMENTATION["color_jitter"]}
    if unknown:
        raise ConfigError(f"unknown augmentation keys: {', '.join(sorted(unknown))}")
    jitter = {**DEFAULT_AUGMENTATION["color_jitter"], **cfg.get("color_jitter", {})}
    return {**DEFAULT_AUGMENTATION, **cfg, "color_jitter": jitter}


def crop_box(
    height: int, width: int, scale: list[float], ratio: list[float], generator: torch.Generator | None
) -> tuple[int, int, int, int]:
    """(top, left, h, w) as torchvision's RandomResizedCrop.get_params, drawn from `generator`."""
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        u = torch.rand(4, generator=generator).tolist()
        target = area * (scale[0] + u[0] * (scale[1] - scale[0]))
        aspect = math.exp(log_ratio[0] + u[1] * (log_ratio[1] - log_ratio[0]))
        w, h = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            return int(u[2] * (height - h + 1)), int(u[3] * (width - w + 1)), h, w
    aspect = min(max(width / height, ratio[0]), ratio[1])  # fallback: the centre, ratio clamped
    w, h = (width, round(width / aspect)) if aspect < width / height else (round(height * aspect), height)
    w, h = min(w, width), min(h, height)
    return (height - h) // 2, (width - w) // 2, h, w


def color_jitter(clip: torch.Tensor, strengths: dict[str, float], generator: torch.Generator | None) -> Colour:
    """Brightness, contrast, saturation and hue in random order, one draw per clip (T x 3 x H x W uint8).

    The four steps are affine in RGB, so they compose into one 3 x 3 matrix and a per-frame offset,
    which `to_model_input` applies (torchvision's HSV hue shift alone costs ~7 ms a 224 x 224 frame
    on a CPU core). Hue is the rotation about the grey axis, the linear form of the HSV shift (exact
    at multiples of 1/3 turn), and values are clamped only at the end.
    """
    b, c, s = (1 + strengths[k] * (2 * float(torch.rand(1, generator=generator)) - 1)
               for k in ("brightness", "contrast", "saturation"))
    hue = strengths["hue"] * (2 * float(torch.rand(1, generator=generator)) - 1)
    gray = _GRAY.double()
    matrix, offset = torch.eye(3, dtype=torch.float64), torch.zeros(clip.shape[0], 3, dtype=torch.float64)
    # The frame means in chunks: a float copy of the whole clip costs more in fresh pages than in sums.
    means = torch.cat([chunk.float().mean(dim=(2, 3)) for chunk in clip.split(8)]).double().cpu()  # T x 3
    for step in torch.randperm(4, generator=generator).tolist():
        if step == 0:
            matrix, offset = b * matrix, b * offset
        elif step == 1:  # blend with the frame's mean grey level, as torchvision per frame
            grey = (means @ matrix.T + offset) @ gray
            matrix, offset = c * matrix, c * offset + (1 - c) * grey[:, None]
        else:
            m = _saturation_matrix(s, gray) if step == 2 else _hue_matrix(hue)
            matrix, offset = m @ matrix, offset @ m.T
    return matrix, offset


def _saturation_matrix(s: float, gray: torch.Tensor) -> torch.Tensor:
    return s * torch.eye(3, dtype=torch.float64) + (1 - s) * torch.ones(3, 1, dtype=torch.float64) * gray


def _hue_matrix(hue: float) -> torch.Tensor:
    """Rotation by hue turns about the grey axis (Rodrigues); positive moves red towards green."""
    theta = 2 * math.pi * hue
    k = torch.full((3,), 1 / math.sqrt(3), dtype=torch.float64)
    cross = torch.tensor([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]], dtype=torch.float64)
    return math.cos(theta) * torch.eye(3, dtype=torch.float64) + math.sin(theta) * cross + (
        1 - math.cos(theta)) * torch.outer(k, k)


def _resize(clip: torch.Tensor, size: int) -> torch.Tensor:
    """T x C x h x w uint8 -> T x C x size x size, bilinear, antialiased."""
    if clip.device.type == "cpu":  # torch's uint8 kernel (channels-last) is fastest here
        return F.interpolate(clip, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    x = F.interpolate(clip.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return x.round_().clamp_(0, 255).to(torch.uint8)
