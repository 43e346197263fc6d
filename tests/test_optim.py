import pytest
import torch

from utils.config import SCHEMA, resolve_section
from utils.errors import ConfigError
from utils.optim import build_optimizer, lr_factor


def opt_cfg(**overrides):
    cfg = resolve_section({"learning_rate": {"default": 1.0}}, SCHEMA["training"]["optimization"])
    cfg.update(overrides)
    return cfg


@pytest.mark.parametrize("warmup_epochs", [0.0, 0.5, 2.0])
def test_cosine_never_exceeds_peak_and_never_reaches_zero_before_the_end(warmup_epochs):
    total, per_epoch = 100, 10
    factor = lr_factor(opt_cfg(warmup_epochs=warmup_epochs), total, per_epoch)
    values = [factor(s) for s in range(total)]
    assert max(values) <= 1.0
    assert min(values) > 0.0
    warmup = round(warmup_epochs * per_epoch)
    assert values[warmup:] == sorted(values[warmup:], reverse=True)  # decays monotonically
    assert values[:warmup] == sorted(values[:warmup])  # warms up monotonically
    assert values[-1] < 0.01


def test_step_schedule_drops_at_milestones():
    factor = lr_factor(opt_cfg(scheduler="step", milestones=[1.0, 2.0], gamma=0.5), 30, 10)
    assert [factor(s) for s in (0, 9, 10, 19, 20, 29)] == [1.0, 1.0, 0.5, 0.5, 0.25, 0.25]


def test_per_module_learning_rates_take_the_longest_prefix():
    model = torch.nn.Sequential()
    model.add_module("encoder", torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)))
    model.add_module("head", torch.nn.Linear(2, 1))
    optimizer = build_optimizer(model, opt_cfg(learning_rate={"default": 1.0, "encoder": 0.1, "encoder.1": 0.01}))
    by_name = {g["name"]: (g["lr"], sum(p.numel() for p in g["params"])) for g in optimizer.param_groups}
    assert by_name == {"default": (1.0, 3), "encoder": (0.1, 6), "encoder.1": (0.01, 6)}


def test_learning_rate_for_an_unknown_module_is_refused_with_the_valid_names():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2))
    with pytest.raises(ConfigError, match=r"learning_rate\.decoder.*modules of this model: 0"):
        build_optimizer(model, opt_cfg(learning_rate={"default": 1.0, "decoder": 0.1}))
