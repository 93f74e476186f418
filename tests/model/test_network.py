"""The autoencoder + estimation network: shapes, masking, gradients, every RNN type."""

from __future__ import annotations

import pytest
import torch

from broker_filter.model.gmm import energy, fit_gmm
from broker_filter.model.network import SHAPE_FEATURES, AutoencoderGMM, NetworkConfig, reconstruction_features, shape_features


def _inputs(n: int = 5, steps: int = 30, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randn(n, steps, 2, generator=generator)
    inputs[:, :, 0] = inputs[:, :, 0].abs() * 0.01
    lengths = torch.tensor([steps, steps - 7, 12, 25, 20][:n])
    mask = torch.arange(steps)[None, :] < lengths[:, None]
    inputs = inputs * mask[:, :, None]
    return inputs, lengths, torch.randn(n, 3, generator=generator)


def _network(**overrides) -> AutoencoderGMM:
    torch.manual_seed(0)
    config = NetworkConfig(size=8, num_layers=2, embedding=4, estnet_size=6, num_classes=3, **overrides)
    return AutoencoderGMM(config).eval()


def test_output_shapes_and_z_is_embedding_plus_five():
    network = _network()
    inputs, lengths, supports = _inputs()
    out = network(inputs, lengths, supports)
    assert out.reconstruction.shape == (5, 30) and out.embedding.shape == (5, 4)
    assert out.z.shape == (5, 4 + 2 + 3) and NetworkConfig().z_dim == 21
    assert out.gamma.shape == (5, 3)
    torch.testing.assert_close(out.gamma.sum(dim=1), torch.ones(5))
    assert (out.reconstruction[1, 23:] == 0).all()


@pytest.mark.parametrize("model_type", ["gru", "lstm", "vanilla"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_padding_does_not_change_outputs(model_type, bidirectional):
    network = _network(model_type=model_type, bidirectional=bidirectional)
    inputs, lengths, supports = _inputs()
    longer = torch.cat([inputs, torch.randn(5, 17, 2) * 50], dim=1)  # garbage in the padding
    with torch.no_grad():
        a = network(inputs, lengths, supports)
        b = network(longer, lengths, supports)
    torch.testing.assert_close(a.z, b.z)
    torch.testing.assert_close(a.gamma, b.gamma)
    torch.testing.assert_close(a.reconstruction, b.reconstruction[:, :30])
    assert (b.reconstruction[:, 30:] == 0).all()
    alone = network(inputs[2:3, :12], lengths[2:3], supports[2:3])
    torch.testing.assert_close(alone.z, a.z[2:3])


def test_joint_loss_gradients_reach_every_parameter():
    network = _network(drop_frac=0.0, estnet_drop_frac=0.0).train()
    inputs, lengths, supports = _inputs()
    out = network(inputs, lengths, supports)
    loss = (out.reconstruction - inputs[:, :, 1]).pow(2).mean() + torch.nn.functional.cross_entropy(
        out.logits, torch.tensor([0, 1, 2, 0, 1])
    ) + 0.01 * energy(out.z, fit_gmm(out.z, out.gamma)).mean()
    loss.backward()
    for name, parameter in network.named_parameters():
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), name
        assert parameter.grad.abs().sum() > 0, name


def test_supports_are_standardised_with_training_statistics():
    network = _network()
    inputs, lengths, supports = _inputs()
    network.set_support_statistics(inputs, lengths, supports * 10 + 5)
    out = network(inputs, lengths, supports * 10 + 5)
    standardised = out.z[:, -3:]
    torch.testing.assert_close(standardised.mean(dim=0), torch.zeros(3), atol=1e-5, rtol=0)


def test_without_mean_magnitude_and_with_shape_features_the_supports_are_standardised_too():
    network = _network(drop_mean_mag=True, shape_features=True)
    inputs, lengths, supports = _inputs()
    supports = supports.abs() + 0.1  # the scale enters as log10
    network.set_support_statistics(inputs, lengths, supports)
    extra = len(SHAPE_FEATURES) + 2
    assert network.config.z_dim == network.config.embedding + 2 + extra
    out = network(inputs, lengths, supports)
    torch.testing.assert_close(out.z[:, -extra:].mean(dim=0), torch.zeros(extra), atol=1e-5, rtol=0)
    changed = supports.clone()
    changed[:, 0] += 3.0  # the mean magnitude: no longer read
    torch.testing.assert_close(network(inputs, lengths, changed).logits, out.logits)


def test_shape_features_ignore_padding_and_see_the_folded_shape():
    n = 50
    phase = torch.linspace(0, 1, n + 1)[:-1]
    wave = torch.cos(2 * torch.pi * phase)
    wave = (wave - wave.mean()) / wave.std(unbiased=False)
    lags = torch.diff(phase, prepend=phase[:1])
    inputs = torch.zeros(2, n + 10, 2)
    inputs[:, :n, 0], inputs[:, :n, 1] = lags, wave
    inputs[1, n:, 1] = 99.0  # padding of the second chunk: must not count
    features = dict(zip(SHAPE_FEATURES, shape_features(inputs, torch.tensor([n, n])).T))
    torch.testing.assert_close(features["skewness"][0], features["skewness"][1])
    assert abs(float(features["skewness"][0])) < 1e-4 and float(features["eta_phase"][0]) < 0.05
    assert float(features["fourier_a1"][0]) > 1.3 and float(features["fourier_r21"][0]) < 0.01


def test_reconstruction_features_over_real_points_only():
    target = torch.tensor([[1.0, -1.0, 5.0], [2.0, 0.0, 0.0]])
    recon = torch.tensor([[1.0, -1.0, -7.0], [1.0, 0.0, 0.0]])
    features = reconstruction_features(target, recon, torch.tensor([2, 1]))
    torch.testing.assert_close(features, torch.tensor([[0.0, 1.0], [0.5, 1.0]]))


def test_config_validation_and_round_trip():
    with pytest.raises(ValueError, match="model_type"):
        NetworkConfig(model_type="transformer")
    with pytest.raises(ValueError, match="drop_frac"):
        NetworkConfig(drop_frac=1.0)
    config = NetworkConfig(size=4, bidirectional=True)
    assert NetworkConfig.from_dict(config.to_dict()) == config
