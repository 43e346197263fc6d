"""Visual frontends: S3D (kylemin/S3D and torchvision weights, freezing, lengths) and EfficientNetV2."""
from __future__ import annotations

import functools

import pytest
import torch
from torch import nn
from torchvision.models.video import s3d
from torchvision.models.video.s3d import SepInceptionBlock3D, TemporalSeparableConv

from modelling.efficientnet import EfficientNetV2Frontend
from modelling.s3d import S3DFrontend, convert_kylemin_s3d
from utils.errors import CheckpointError


def random_torchvision_s3d() -> dict[str, torch.Tensor]:
    """A torchvision S3D state dict where every tensor, BatchNorm buffers included, is distinct."""
    return dict(_random_torchvision_s3d())


@functools.cache
def _random_torchvision_s3d() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    state = s3d(weights=None).state_dict()
    return {k: torch.randint(0, 100, v.shape, generator=generator) if k.endswith("num_batches_tracked")
            else torch.rand(v.shape, generator=generator) + 0.5 for k, v in state.items()}


def kylemin_names() -> dict[str, str]:
    """torchvision module path -> kylemin/S3D module path, derived from the module structure."""
    names = {}
    model = s3d(weights=None)
    for path, module in model.named_modules():
        if isinstance(module, TemporalSeparableConv):
            for i, part in enumerate(("s", "t")):
                names[f"{path}.{i}.0"] = f"{path}.conv_{part}"
                names[f"{path}.{i}.1"] = f"{path}.bn_{part}"
        elif isinstance(module, SepInceptionBlock3D):
            names[f"{path}.branch0.0"] = f"{path}.branch0.0.conv"
            names[f"{path}.branch0.1"] = f"{path}.branch0.0.bn"
    for path, module in model.named_modules():
        parent = path.rsplit(".", 1)[0]
        if isinstance(module, (nn.Conv3d, nn.BatchNorm3d)) and path not in names:
            names[path] = f"{parent}.{'conv' if isinstance(module, nn.Conv3d) else 'bn'}"
    names["classifier.1"] = "fc.0"
    return names


def to_kylemin(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    names = kylemin_names()
    out = {}
    for key, tensor in state.items():
        module, leaf = key.rsplit(".", 1)
        out[f"module.{names[module].replace('features.', 'base.', 1)}.{leaf}"] = tensor
    return out


def test_kylemin_mapping_is_one_to_one_onto_torchvision() -> None:
    source = random_torchvision_s3d()
    assert sum(k.startswith("features.") for k in source) == 462
    kylemin = to_kylemin(source)
    assert len(set(kylemin)) == len(source)
    assert "module.base.5.branch1.1.conv_s.weight" in kylemin and "module.base.2.bn.running_var" in kylemin
    converted = convert_kylemin_s3d(kylemin)
    assert converted.keys() == source.keys()
    assert all(converted[k] is source[k] for k in source)


@pytest.mark.parametrize("use_block", [16, 13])
def test_load_kylemin_checkpoint(tmp_path, use_block) -> None:
    source = random_torchvision_s3d()
    path = tmp_path / "s3d_kinetics400.pt"
    torch.save(to_kylemin(source), path)
    frontend = S3DFrontend(use_block=use_block)
    assert frontend.load_pretrained(path) == len(frontend.blocks.state_dict())
    loaded = frontend.blocks.state_dict()
    assert len(loaded) == (462 if use_block == 16 else 366)
    for key, tensor in loaded.items():
        assert torch.equal(tensor, source[f"features.{key}"]), key


def test_load_torchvision_checkpoint(tmp_path) -> None:
    source = random_torchvision_s3d()
    path = tmp_path / "s3d_torchvision.pth"
    torch.save(source, path)
    frontend = S3DFrontend(use_block=5, pretrained=path)
    for key, tensor in frontend.blocks.state_dict().items():
        assert torch.equal(tensor, source[f"features.{key}"]), key


@pytest.mark.parametrize("layout", ["kylemin", "torchvision"])
def test_missing_or_extra_key_is_refused(tmp_path, layout) -> None:
    source = random_torchvision_s3d()
    state = to_kylemin(source) if layout == "kylemin" else source
    missing_key = next(k for k in state if "branch2" in k and k.endswith("weight"))
    extra_key = "module.base.3.extra.weight" if layout == "kylemin" else "features.3.extra.weight"
    path = tmp_path / "bad.pt"
    torch.save({k: v for k, v in state.items() if k != missing_key}, path)
    with pytest.raises(CheckpointError, match="missing .*branch2"):
        S3DFrontend(use_block=16, pretrained=path)
    torch.save({**state, extra_key: torch.zeros(1)}, path)
    with pytest.raises(CheckpointError, match=extra_key.removeprefix("module.").replace(".", r"\.")):
        S3DFrontend(use_block=16, pretrained=path)


def test_shape_mismatch_is_refused(tmp_path) -> None:
    state = random_torchvision_s3d()
    state["features.2.0.weight"] = torch.zeros(64, 64, 1, 1, 2)
    path = tmp_path / "bad.pt"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=r"features\.2\.0\.weight"):
        S3DFrontend(use_block=4, pretrained=path)


def test_frozen_blocks_keep_weights_and_statistics() -> None:
    torch.manual_seed(0)
    frontend = S3DFrontend(use_block=4, freeze_block=2).train()
    before = {k: v.clone() for k, v in frontend.blocks.state_dict().items()}
    features, _ = frontend(torch.randn(2, 3, 8, 32, 32), torch.tensor([8, 8]))
    features.sum().backward()
    assert not frontend.blocks[0][0][1].training and frontend.blocks[2][1].training
    for name, param in frontend.blocks.named_parameters():
        frozen = int(name.split(".")[0]) < 2
        assert param.requires_grad is not frozen
        assert (param.grad is None) is frozen, name
    after = frontend.blocks.state_dict()
    for key in ("0.0.1.running_mean", "0.1.1.running_var"):
        assert torch.equal(after[key], before[key]), key
    for key in ("2.1.running_mean", "3.1.1.running_var"):
        assert not torch.equal(after[key], before[key]), key


def test_output_lengths_match_real_output() -> None:
    frontend = S3DFrontend(use_block=16).eval()
    slrt = S3DFrontend(use_block=13)
    assert (frontend.out_channels, slrt.out_channels) == (1024, 832)
    mixed_4f_frames = []
    frontend.blocks[12].register_forward_hook(lambda module, args, out: mixed_4f_frames.append(out.shape[2]))
    with torch.no_grad():
        for frames in range(8, 71):
            features, lengths = frontend(torch.zeros(1, 3, frames, 32, 32), torch.tensor([frames]))
            assert lengths.tolist() == [features.shape[1]], frames
            assert slrt.output_lengths(torch.tensor([frames])).tolist() == mixed_4f_frames[-1:], frames
    assert slrt.output_lengths(torch.tensor([64, 63, 61])).tolist() == [16, 16, 16]


def test_s3d_forward_backward_tiny() -> None:
    frontend = S3DFrontend(use_block=13, freeze_block=1)
    features, lengths = frontend(torch.randn(1, 3, 16, 64, 64), torch.tensor([16]))
    assert features.shape == (1, 4, 832) and lengths.tolist() == [4]
    features.square().mean().backward()
    trainable = [p for p in frontend.parameters() if p.requires_grad]
    assert trainable and all(p.grad is not None and torch.isfinite(p.grad).all() for p in trainable)


@pytest.mark.parametrize(
    "scale,low,high", [("T", 12.0e6, 13.0e6), ("S", 20.0e6, 20.5e6), ("B", 5.7e6, 6.1e6)]
)
def test_efficientnet_scales_train_and_keep_samples_apart(scale, low, high) -> None:
    torch.manual_seed(0)
    cases = [(EfficientNetV2Frontend(scale, in_channels=1, stem_3d=True), torch.randn(2, 1, 4, 32, 32)),
             (EfficientNetV2Frontend(scale), torch.randn(2, 3, 4, 32, 32))]
    for frontend, video in cases:
        params = sum(p.numel() for p in frontend.parameters())
        print(f"EfficientNetV2-{scale} stem_3d={frontend.stem_3d is not None}: {params} parameters")
        assert low < params < high
        features, lengths = frontend.train()(video, torch.tensor([4, 3]))
        assert features.shape == (2, 4, frontend.out_channels) and lengths.tolist() == [4, 3]
        features.square().mean().backward()
        for name, param in frontend.named_parameters():
            assert param.grad is not None and torch.isfinite(param.grad).all(), name
        frontend.eval()
        with torch.no_grad():
            reference, _ = frontend(video, lengths)
            changed = video.clone()
            changed[1] = torch.randn_like(changed[1])
            result, _ = frontend(changed, lengths)
        assert torch.allclose(result[0], reference[0], atol=1e-6)
        assert not torch.allclose(result[1], reference[1])


def test_efficientnet_s_matches_torchvision() -> None:
    from torchvision.models import efficientnet_v2_s

    ours = EfficientNetV2Frontend("S").features.state_dict()
    reference = efficientnet_v2_s().features.state_dict()
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in reference.items()}


def test_efficientnet_rejects_unknown_scale_and_stray_stem_width() -> None:
    with pytest.raises(ValueError, match="scale"):
        EfficientNetV2Frontend("XL")
    with pytest.raises(ValueError, match="stem_3d"):
        EfficientNetV2Frontend("B", stem_channels=32)


def test_checkpoint_without_batch_counters_loads(tmp_path) -> None:
    source = random_torchvision_s3d()
    path = tmp_path / "old.pt"
    torch.save({k: v for k, v in source.items() if not k.endswith("num_batches_tracked")}, path)
    frontend = S3DFrontend(use_block=4)
    counters = sum(isinstance(m, nn.BatchNorm3d) for m in frontend.modules())
    assert frontend.load_pretrained(path) == len(frontend.blocks.state_dict()) - counters
    loaded = frontend.blocks.state_dict()
    assert torch.equal(loaded["3.1.1.running_mean"], source["features.3.1.1.running_mean"])


def test_s3d_bn_momentum_sets_every_batchnorm_and_defaults_to_torchvisions():
    def momenta(frontend: S3DFrontend) -> set[float]:
        return {m.momentum for m in frontend.modules() if isinstance(m, nn.BatchNorm3d)}

    assert momenta(S3DFrontend(use_block=4)) == {0.001}
    assert momenta(S3DFrontend(use_block=4, bn_momentum=0.1)) == {0.1}
