import torch

from modelling.visual_head import VisualHead


def head() -> VisualHead:
    torch.manual_seed(0)
    return VisualHead(num_classes=7, input_size=12, hidden_size=16, ff_size=32)


def test_outputs_and_every_parameter_gets_a_gradient():
    model = head()
    out = model(torch.randn(3, 10, 12), torch.tensor([10, 7, 4]))
    assert out["gloss_logits"].shape == (3, 10, 7) and out["gloss_feature"].shape == (3, 10, 16)
    torch.testing.assert_close(out["gloss_probabilities"].sum(-1), torch.ones(3, 10))
    out["gloss_log_probabilities"][:, :4].sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def test_padding_and_other_samples_do_not_change_a_samples_output():
    model = head().eval()
    model.bn1.running_mean.uniform_(-1, 1)  # non-trivial statistics
    features = torch.randn(1, 6, 12)
    alone = model(features, torch.tensor([6]))["gloss_logits"][0]
    batch = torch.randn(2, 9, 12) * 100
    batch[1, :6] = features[0]
    together = model(batch, torch.tensor([9, 6]))["gloss_logits"][1, :6]
    torch.testing.assert_close(alone, together)


def test_batchnorm_statistics_ignore_padded_frames():
    model = head().train()
    features = torch.randn(2, 8, 12)
    lengths = torch.tensor([8, 3])
    model(features, lengths)
    stats_valid = model.bn1.running_mean.clone()
    model.bn1.reset_running_stats()
    features[1, 3:] = 1e4  # garbage in padding
    model(features, lengths)
    torch.testing.assert_close(model.bn1.running_mean, stats_valid)
