"""RecognitionNetwork (S2G): tiny S3D and EfficientNet-B models on random uint8 clips, CPU only."""
from __future__ import annotations

import copy
from typing import Any

import pytest
import torch

from modelling.recognition import RecognitionNetwork
from utils.errors import CheckpointError, ConfigError

NUM_GLOSSES = 6
TINY: dict[str, Any] = {
    "frontend": "s3d",
    "s3d": {"use_block": 8, "freeze_block": 3, "pretrained_ckpt": None, "bn_momentum": None},  # up to Mixed_4b, temporal stride 4
    "efficientnet": {"scale": "B", "stem_3d": False, "pretrained_ckpt": None},
    "input_convention": "slrt_bgr",
    "augmentation": {"img_size": 16},
    "visual_head": {"hidden_size": 32, "ff_size": 64, "ff_kernelsize": [3, 3], "dropout": 0.0, "pe": True},
    "load_ckpt": None,
}


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny convolutions: on a busy machine, intra-op threads waiting on each other cost 10x the work."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def config(frontend: str = "s3d", **changes: Any) -> dict[str, Any]:
    cfg = copy.deepcopy(TINY)
    cfg["frontend"] = frontend
    cfg.update(changes)
    return cfg


def model(frontend: str = "s3d", **changes: Any) -> RecognitionNetwork:
    torch.manual_seed(0)
    return RecognitionNetwork(config(frontend, **changes), NUM_GLOSSES)


def make_batch(lengths: list[int], seed: int = 0) -> dict[str, Any]:
    generator = torch.Generator().manual_seed(seed)
    video = torch.randint(0, 256, (len(lengths), 3, max(lengths), 40, 48), dtype=torch.uint8, generator=generator)
    for b, length in enumerate(lengths):
        video[b, :, length:] = 0  # as the loader pads
    return {"video": video, "video_lengths": torch.tensor(lengths), "labels": torch.tensor([1, 2, 3, 4, 5]),
            "label_lengths": torch.tensor([3, 2])}


def randomise_batchnorm_statistics(module: torch.nn.Module) -> None:
    for bn in module.modules():
        if isinstance(bn, torch.nn.modules.batchnorm._BatchNorm):
            bn.running_mean.uniform_(-1, 1)
            bn.running_var.uniform_(0.5, 2)


@pytest.mark.parametrize("frontend", ["s3d", "efficientnet"])
def test_forward_backward_and_frozen_blocks(frontend) -> None:
    net = model(frontend).train()
    batch = make_batch([24, 16] if frontend == "s3d" else [8, 5])
    before = {k: v.clone() for k, v in net.state_dict().items()}
    out = net({**batch, "generator": torch.Generator().manual_seed(1)})
    expected = [6, 4] if frontend == "s3d" else [8, 5]
    assert out["output_lengths"].tolist() == expected
    assert out["gloss_logits"].shape == (2, max(expected), NUM_GLOSSES)
    assert out["gloss_features"].shape == (2, max(expected), 32)
    torch.testing.assert_close(out["gloss_probabilities"].log(), out["gloss_log_probabilities"])
    assert torch.isfinite(out["loss"]) and out["loss"] > 0
    out["loss"].backward()
    frozen = [name for name, p in net.named_parameters() if not p.requires_grad]
    assert bool(frozen) == (frontend == "s3d")
    for name, param in net.named_parameters():
        if param.requires_grad:
            assert param.grad is not None and torch.isfinite(param.grad).all(), name
        else:
            assert param.grad is None and name.startswith(("frontend.blocks.0.", "frontend.blocks.2.")), name
    after = net.state_dict()
    for key in after:
        if key.endswith("running_mean"):
            is_frozen = key.startswith(("frontend.blocks.0.", "frontend.blocks.2."))
            assert torch.equal(after[key], before[key]) == is_frozen, key


def test_training_augmentation_draws_from_the_batch_generator() -> None:
    net = model().train()
    batch = make_batch([24, 16])
    losses = [net({**batch, "generator": torch.Generator().manual_seed(seed)})["loss"] for seed in (1, 1, 2)]
    assert losses[0] == losses[1] and losses[0] != losses[2]


def test_padding_leaves_a_samples_outputs_alone() -> None:
    """EfficientNet (frame by frame) + VisualHead: exact. S3D: its temporal convolutions and pools read the
    padded frames, so only the steps out of reach of the clip's end are exact (the head's two kernel-3
    convolutions widen that reach by 2 steps)."""
    for frontend, length, longer, exact_steps in (("efficientnet", 5, 8, 5), ("s3d", 32, 48, 4)):
        net = model(frontend).eval()
        with torch.no_grad():
            randomise_batchnorm_statistics(net)
            alone = net(make_batch([length]) | {"label_lengths": torch.tensor([5])})
            batch = make_batch([longer, length], seed=1)
            batch["video"][1] = 0
            batch["video"][1, :, :length] = make_batch([length])["video"][0]
            together = net(batch)
        steps = int(alone["output_lengths"][0])
        assert int(together["output_lengths"][1]) == steps
        a, b = alone["gloss_log_probabilities"][0], together["gloss_log_probabilities"][1, :steps]
        torch.testing.assert_close(a[:exact_steps], b[:exact_steps], atol=1e-5, rtol=1e-5)


def test_decode_uses_output_lengths_and_beam_size() -> None:
    net = model()
    log_probs = torch.full((2, 5, NUM_GLOSSES), -10.0)
    for b, path in enumerate([[0, 2, 2, 0, 4], [3, 0, 3, 5, 5]]):
        log_probs[b, torch.arange(5), path] = 0.0
    outputs = {"gloss_log_probabilities": log_probs.log_softmax(-1), "output_lengths": torch.tensor([5, 3])}
    assert net.decode(outputs, {"video_lengths": torch.tensor([20, 20])}) == [[2, 4], [3, 3]]
    net.beam_size = 3
    assert net.decode(outputs, {}) == [[2, 4], [3, 3]]


def test_min_frames_is_the_shortest_clip_with_an_output_step() -> None:
    for use_block, expected in ((8, 1), (16, 5)):  # features[13] pools time by 2 without padding
        s3d = {"use_block": use_block, "freeze_block": 0, "pretrained_ckpt": None, "bn_momentum": None}
        net = model(s3d=s3d, augmentation={"img_size": 32}).eval()  # features[13] needs 2 x 2 pixels
        assert net.min_frames == expected
        with torch.no_grad():
            out = net(make_batch([net.min_frames]) | {"label_lengths": torch.tensor([1]),
                                                     "labels": torch.tensor([1])})
        assert out["gloss_logits"].shape[1] == 1
        assert net.frontend.output_lengths(torch.tensor([net.min_frames - 1])).item() == 0


def test_overfits_one_batch() -> None:
    net = model().train()
    batch = make_batch([16, 12])  # 4 and 3 output steps for 3 and 2 glosses
    optimizer = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=1e-3)
    losses = []
    for _ in range(12):
        out = net({**batch, "generator": torch.Generator().manual_seed(1)})  # the same crop each step
        optimizer.zero_grad()
        out["loss"].backward()
        optimizer.step()
        losses.append(out["loss"].item())
    assert losses[-1] < 0.25 * losses[0], losses
    assert net.decode(out, batch) == [[1, 2, 3], [4, 5]]


def test_checkpoint_round_trip_and_pretrained_efficientnet(tmp_path) -> None:
    net = model("efficientnet").eval()
    with torch.no_grad():
        randomise_batchnorm_statistics(net)
    path = tmp_path / "step_1.ckpt"
    torch.save({"model": net.state_dict(), "step": 1}, path)
    loaded = RecognitionNetwork(config("efficientnet", load_ckpt=str(path)), NUM_GLOSSES).eval()
    batch = make_batch([4, 3])
    with torch.no_grad():
        torch.testing.assert_close(loaded(batch)["gloss_logits"], net(batch)["gloss_logits"], atol=0, rtol=0)
    with pytest.raises(CheckpointError, match="load_ckpt"):
        RecognitionNetwork(config("efficientnet", load_ckpt=str(path)), NUM_GLOSSES + 1)

    torchvision_file = tmp_path / "efficientnet_b.pth"  # torchvision layout: features.* and a classifier
    torch.save({**net.frontend.state_dict(), "classifier.1.weight": torch.zeros(1000, 1280)}, torchvision_file)
    cfg = config("efficientnet", efficientnet={"scale": "B", "stem_3d": False, "pretrained_ckpt": str(torchvision_file)})
    frontend = RecognitionNetwork(cfg, NUM_GLOSSES).frontend.state_dict()
    assert all(torch.equal(frontend[k], v) for k, v in net.frontend.state_dict().items())
    cfg["efficientnet"]["stem_3d"] = True
    with pytest.raises(CheckpointError, match="stem_3d"):
        RecognitionNetwork(cfg, NUM_GLOSSES)


def test_bad_config_is_refused() -> None:
    with pytest.raises(ConfigError, match="augmentation keys: flip"):
        model(augmentation={"flip": 0.5})
    with pytest.raises(ConfigError, match="input_convention"):
        model(input_convention="rgb")
    with pytest.raises(ConfigError, match="frontend"):
        model("resnet")
