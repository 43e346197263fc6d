from pathlib import Path

import pytest
import torch

from modelling.lipnet import LipNet
from utils.checkpoint import load_weights
from utils.errors import CheckpointError

PUBLISHED_SHAPES = {  # LipNet-PyTorch's GRID checkpoints
    "conv1.weight": (32, 3, 3, 5, 5), "conv2.weight": (64, 32, 3, 5, 5), "conv3.weight": (96, 64, 3, 3, 3),
    "gru1.weight_ih_l0": (768, 3072), "gru2.weight_ih_l0": (768, 512), "FC.weight": (28, 512),
}


def test_full_size_lipnet_matches_the_published_checkpoints():
    model = LipNet()
    assert sum(p.numel() for p in model.parameters()) == 6_638_844
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert all(shapes[k] == v for k, v in PUBLISHED_SHAPES.items())


def test_a_published_style_state_dict_loads_strictly_and_a_mismatch_lists_the_keys(tmp_path):
    source = LipNet()
    published = {f"module.{k}": v.clone() for k, v in source.state_dict().items()}  # as saved from DataParallel
    torch.save(published, tmp_path / "lipnet_grid.pt")
    target = LipNet()
    load_weights(target, tmp_path / "lipnet_grid.pt", "model.LipNet.load_ckpt")
    assert all(torch.equal(target.state_dict()[k], v) for k, v in source.state_dict().items())
    del published["module.FC.bias"]
    published["module.extra.weight"] = torch.zeros(1)
    torch.save(published, tmp_path / "broken.pt")
    with pytest.raises(CheckpointError, match=r"missing keys \['FC.bias'\], unexpected keys \['extra.weight'\]"):
        load_weights(target, tmp_path / "broken.pt", "model.LipNet.load_ckpt")


def tiny_batch(lengths, seed=0):
    g = torch.Generator().manual_seed(seed)
    video = torch.rand(len(lengths), 3, max(lengths), 32, 64, generator=g)
    for i, n in enumerate(lengths):
        video[i, :, n:] = 0
    return {
        "video": video,
        "video_lengths": torch.tensor(lengths),
        "labels": torch.randint(1, 28, (3 * len(lengths),), generator=g),
        "label_lengths": torch.full((len(lengths),), 3),
    }


@pytest.mark.parametrize("batch_norm", [False, True])
def test_every_parameter_gets_a_finite_gradient(batch_norm):
    model = LipNet(input_size=(32, 64), channels=(8, 16, 24), hidden_size=16, batch_norm=batch_norm)
    loss = model(tiny_batch([12, 9]))["loss"]
    loss.backward()
    assert torch.isfinite(loss)
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("batch_norm", [False, True])
def test_a_samples_output_does_not_depend_on_padding_or_on_other_samples(batch_norm):
    model = LipNet(input_size=(32, 64), channels=(8, 16, 24), hidden_size=16, batch_norm=batch_norm).eval()
    alone = tiny_batch([9])
    together = tiny_batch([15, 9], seed=1)
    together["video"][1] = 0
    together["video"][1, :, :9] = alone["video"][0]
    with torch.no_grad():
        a = model.encode(alone["video"], alone["video_lengths"])[0]
        b = model.encode(together["video"], together["video_lengths"])[1, :9]
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


class Reached(Exception):
    pass


def test_sync_batchnorm_conversion_replaces_the_norms_forward_uses():
    model = LipNet(input_size=(32, 64), channels=(8, 16, 24), hidden_size=16, batch_norm=True)
    keys = list(model.state_dict())
    model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    assert list(model.state_dict()) == keys  # bn1/bn2/bn3 keep their checkpoint names
    called = []

    def stop(module, _):  # SyncBatchNorm's forward needs a process group: reaching it is the point
        called.append(module)
        raise Reached

    model.bn1.register_forward_pre_hook(stop)
    with pytest.raises(Reached):
        model.encode(tiny_batch([4])["video"], torch.tensor([4]))
    assert called == [model.bn1] and isinstance(model.bn1, torch.nn.SyncBatchNorm)


@pytest.mark.parametrize("size", [(50, 100), (45, 70), (47, 79), (15, 15)])  # 47, 79 and 15: H // 16 undercounts these
def test_any_input_size_the_three_stages_can_reduce_works(size):
    model = LipNet(input_size=size, channels=(4, 8, 8), hidden_size=8)
    video = torch.rand(1, 3, 5, *size)
    assert model.encode(video, torch.tensor([5])).shape == (1, 5, 28)


def test_a_too_small_input_size_is_refused_naming_the_minimum():
    with pytest.raises(ValueError, match=r"input_size \(14, 64\) is too small: .* at least \(15, 15\)"):
        LipNet(input_size=(14, 64))


def test_a_too_small_input_size_in_a_config_is_one_config_error(tmp_path):
    from modelling import build_model
    from utils.config import load_config
    from utils.errors import ConfigError

    config = Path(__file__).resolve().parents[1] / "experiments/configs/demo/grid_lipnet.yaml"
    cfg = load_config(config, ["data.input.height=14", f"training.model_dir={tmp_path}"], check_paths=False)
    with pytest.raises(ConfigError, match=r"model.LipNet / data.input: LipNet input_size \(14, 64\) is too small"):
        build_model(cfg)
