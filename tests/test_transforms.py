import numpy as np
import pytest
import torch

import torchvision.transforms.v2.functional as TF

from dataset.transforms import augment_batch, color_jitter, stack_clips, temporal_indices, to_model_input
from utils.errors import ConfigError

NO_COLOUR = {"color_jitter": {"p": 0.0}}


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("num_frames", [1, 7, 30, 101, 500])
def test_temporal_indices_keep_order_multiples_of_4_and_the_cap(num_frames):
    generator = seeded()
    for _ in range(20):
        picked = temporal_indices(num_frames, True, 0.5, 1.5, max_frames=200, generator=generator)
        assert len(picked) % 4 == 0 and 4 <= len(picked) <= 200
        assert picked == sorted(picked) and 0 <= picked[0] and picked[-1] < num_frames
        if num_frames >= 30 and len(picked) < 200:
            assert 0.5 * num_frames - 2 <= len(picked) <= 1.5 * num_frames + 2
    kept = temporal_indices(num_frames, False, max_frames=200)
    assert len(kept) % 4 == 0 and kept == sorted(kept) and len(kept) <= 200
    if num_frames <= 200:
        assert kept[:num_frames] == list(range(num_frames)) and set(kept[num_frames:]) <= {num_frames - 1}


def test_temporal_indices_repeat_with_the_seed():
    assert temporal_indices(80, True, generator=seeded(3)) == temporal_indices(80, True, generator=seeded(3))


def square_clip(frames: int = 8, height: int = 60, width: int = 80) -> np.ndarray:
    """A bright square on a dark background whose brightness changes over time."""
    clip = np.zeros((frames, height, width, 3), np.uint8)
    clip[:] = (10 * np.arange(frames))[:, None, None, None]
    clip[:, 20:35, 50:70] = 250
    return clip


def model_input(video, lengths, cfg, train, generator=None):
    """What RecognitionNetwork feeds SLRT's S3D: augmented, recoloured, BGR in [-1, 1]."""
    augmented, colours = augment_batch(video, lengths, cfg, train, generator)
    return to_model_input(augmented, "slrt_bgr", colours)


def test_one_crop_box_per_clip_keeps_the_layout_across_frames():
    video, lengths = stack_clips([square_clip(), square_clip(6)])
    out, colours = augment_batch(video, lengths, {**NO_COLOUR, "img_size": 32}, True, seeded())
    assert colours == [None, None]
    for b, length in enumerate(lengths.tolist()):
        bright = out[b, 1, :length] > 200
        assert bright[0].any() and (bright == bright[0]).all()  # the square at one place in every frame


def test_flip_flips_and_padding_stays_black():
    video, lengths = stack_clips([square_clip(), square_clip(5)])
    cfg = {**NO_COLOUR, "img_size": 40, "eval_crop": 1.0}
    plain, _ = augment_batch(video, lengths, cfg, False)
    flipped, _ = augment_batch(video, lengths, {**cfg, "crop_scale": [1.0, 1.0], "crop_ratio": [0.75, 0.75],
                                                "hflip": 1.0}, True, seeded())
    assert torch.equal(flipped, plain.flip(-1))
    assert (plain[1, :, 5:] == 0).all() and (flipped[1, :, 5:] == 0).all()
    jittered = model_input(video, lengths, {"color_jitter": {"p": 1.0}}, True, seeded())
    assert (jittered[1, :, 5:] == -1).all() and (jittered[1, :, :5] > -1).any()


def test_eval_is_deterministic_and_centre_crops():
    video, lengths = stack_clips([square_clip()])
    cfg = {"img_size": 30, "eval_crop": 0.5}
    out, colours = augment_batch(video, lengths, cfg, False)
    assert out.shape == (1, 3, 8, 30, 30) and out.dtype == torch.uint8 and colours == [None]
    assert torch.equal(out, augment_batch(video, lengths, cfg, False, seeded(5))[0])
    assert out[0, :, :, 7:18, -6:].min() >= 245 and out[0, :, :, :, :20].max() < 100  # square on the right


def test_same_seed_same_output_other_seed_other_output():
    video, lengths = stack_clips([np.random.default_rng(0).integers(0, 256, (8, 48, 64, 3), np.uint8)] * 2)
    cfg = {"img_size": 32, "color_jitter": {"p": 1.0}, "hflip": 0.5}
    first = model_input(video, lengths, cfg, True, seeded(1))
    assert torch.equal(first, model_input(video, lengths, cfg, True, seeded(1)))
    assert not torch.equal(first, model_input(video, lengths, cfg, True, seeded(2)))
    assert not torch.equal(first[0], first[1])  # each clip of the batch draws its own


def test_colour_jitter_moves_colours_but_not_black():
    video, lengths = stack_clips([square_clip()])
    geometry = {"img_size": 60, "crop_scale": [1.0, 1.0], "crop_ratio": [0.75, 0.75]}
    out = model_input(video, lengths, {**geometry, "color_jitter": {"p": 1.0, "contrast": 0.0}}, True, seeded())
    assert not torch.equal(out, model_input(video, lengths, {**NO_COLOUR, "img_size": 60}, False))
    assert (out[0, :, 0, :5, :5] == -1).all()  # brightness, saturation and hue keep black black


@pytest.mark.parametrize("step", ["brightness", "contrast", "saturation"])
def test_colour_jitter_steps_equal_torchvisions(step):
    """Each step alone, as `to_model_input` applies it, is torchvision's adjust_* on every frame."""
    clip = torch.from_numpy(np.random.default_rng(1).integers(0, 256, (6, 3, 20, 24), np.uint8))
    strengths = {"brightness": 0.0, "contrast": 0.0, "saturation": 0.0, "hue": 0.0, step: 0.8}
    draws = torch.rand(4, generator=seeded(4))  # color_jitter's: the factors, then the hue
    factor = 1 + 0.8 * (2 * float(draws[["brightness", "contrast", "saturation"].index(step)]) - 1)
    adjust = {"brightness": TF.adjust_brightness, "contrast": TF.adjust_contrast,
              "saturation": TF.adjust_saturation}[step]
    expected = adjust(clip.float() / 255, factor).flip(1).mul(2).sub(1).transpose(0, 1)
    colour = color_jitter(clip, strengths, seeded(4))
    ours = to_model_input(clip.transpose(0, 1)[None], "slrt_bgr", [colour])[0]
    assert torch.allclose(ours, expected, atol=1e-5)


def test_recolouring_covers_the_clip_and_clamps_like_uint8():
    video, lengths = stack_clips([square_clip(6), square_clip(3)])
    colour = (torch.eye(3, dtype=torch.float64) * 3, torch.zeros(3, 3, dtype=torch.float64))  # tripled, 3 frames
    out = to_model_input(video, "slrt_bgr", [None, colour])
    assert torch.equal(out[0], to_model_input(video[:1], "slrt_bgr")[0])
    tripled = (video[1, :, :3].double() * 3).clamp(0, 255).flip(0) * 2 / 255 - 1
    assert torch.allclose(out[1, :, :3].double(), tripled, atol=1e-6)
    assert (out[1, :, 3:] == -1).all()


def test_conventions_on_known_pixels():
    red = torch.tensor([255, 0, 0], dtype=torch.uint8).view(1, 3, 1, 1, 1)
    assert to_model_input(red, "slrt_bgr").flatten().tolist() == [-1.0, -1.0, 1.0]
    expected = [(1 - 0.43216) / 0.22803, -0.394666 / 0.22145, -0.37645 / 0.216989]
    assert to_model_input(red, "torchvision_rgb").flatten().tolist() == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ConfigError):
        to_model_input(red, "bgr")


def test_unknown_config_keys_are_refused():
    video, lengths = stack_clips([square_clip()])
    with pytest.raises(ConfigError, match="color_jitter.strength"):
        augment_batch(video, lengths, {"color_jitter": {"strength": 1}}, True)
