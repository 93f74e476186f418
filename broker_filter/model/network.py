"""The RNN autoencoder and estimation network (Naul et al. 2018; Tsang & Schultz 2019).

::

    inputs (N, T, 2) [lag, scaled mag] --encoder RNN--> last state --linear--> embedding (E)
    [embedding repeated T times, lag] --decoder RNN--> --linear--> reconstruction (N, T)
    z = [embedding, relative distance, cosine similarity, standardised supports, shape]
    z --(dense(estnet_size), tanh, dropout) x estnet_layers--> --dense--> logits (K) --softmax--> gamma

Padding beyond ``lengths`` changes no output: the encoder state is taken at each chunk's
last real point, the reconstruction is zero at padding, and the reconstruction features
are computed over real points only. ``gamma`` is both the class probabilities and the
GMM memberships. The supports (mean magnitude, scale, log10 period) are standardised with
training-set statistics held in buffers, so that the saved weights are self-contained.

Two options go beyond the paper (both off in :class:`NetworkConfig`'s defaults, so that
older bundles load unchanged; the training recipe turns them on):

* ``drop_mean_mag``: the mean magnitude is left out and the scale enters as log10. The
  mean magnitude names the survey rather than the star (faint meant Stripe 82 RR Lyrae in
  training), so a model that reads it transfers badly to another survey.
* ``shape_features``: nine statistics of the folded, scaled chunk the encoder reads
  (skewness, kurtosis, range, the von Neumann ratio in phase order, which is small when
  the period folds the curve well, the first two Fourier amplitudes, the phase difference
  phi21 as cos/sin, and the share of points fainter than the mean). They are computed here,
  from the network's own inputs, so that training, every serving path and an exported
  network agree by construction. They give the estimation network the light-curve
  features a random forest would use, beside the embedding.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import NamedTuple

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from broker_filter.model.features import INPUT_FEATURES, SUPPORT_FEATURES

RNN_TYPES = {"gru": nn.GRU, "lstm": nn.LSTM, "vanilla": nn.RNN}
RECONSTRUCTION_FEATURES = ("relative_distance", "cosine_similarity")
SHAPE_FEATURES = ("skewness", "kurtosis", "range", "eta_phase", "fourier_a1", "fourier_r21",
                  "cos_phi21", "sin_phi21", "fainter_share")
_EPS = 1e-8
#: Sizes an architecture may ask for, checked before any allocation: a bundle's JSON saying
#: ``size = 6000`` must be refused in one line, not after gigabytes of weights are allocated.
ARCHITECTURE_BOUNDS = {"size": 1024, "num_layers": 8, "embedding": 512, "num_classes": 256, "estnet_size": 1024,
                       "estnet_layers": 8}


@dataclass(frozen=True)
class NetworkConfig:
    """Architecture, by the paper's option names (``--model_type --size --num_layers ...``)."""

    model_type: str = "gru"
    size: int = 96
    num_layers: int = 2
    embedding: int = 16
    drop_frac: float = 0.25
    bidirectional: bool = False
    num_classes: int = 8
    estnet_size: int = 16
    estnet_drop_frac: float = 0.5
    estnet_layers: int = 1
    drop_mean_mag: bool = False
    shape_features: bool = False

    def __post_init__(self) -> None:
        if self.model_type not in RNN_TYPES:
            raise ValueError(f"model_type must be one of {sorted(RNN_TYPES)}, got {self.model_type!r}")
        for name, largest in ARCHITECTURE_BOUNDS.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= largest:
                raise ValueError(f"{name} must be an integer in [1, {largest}], got {value!r}")
        for name in ("drop_frac", "estnet_drop_frac"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1)")

    @property
    def support_dim(self) -> int:
        """Supports the estimation network reads: 3, or 2 without the mean magnitude."""
        return len(SUPPORT_FEATURES) - int(self.drop_mean_mag)

    @property
    def z_dim(self) -> int:
        """Estimation-network input size: embedding + 2 reconstruction features + supports + shape features."""
        shape = len(SHAPE_FEATURES) if self.shape_features else 0
        return self.embedding + len(RECONSTRUCTION_FEATURES) + self.support_dim + shape

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping) -> NetworkConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown network keys {sorted(unknown)}")
        return cls(**data)


class NetworkOutput(NamedTuple):
    """reconstruction (N, T; zeros at padding), embedding (N, E), z (N, E+5), logits and gamma (N, K)."""

    reconstruction: torch.Tensor
    embedding: torch.Tensor
    z: torch.Tensor
    logits: torch.Tensor
    gamma: torch.Tensor


class AutoencoderGMM(nn.Module):
    """Encoder RNN, decoder RNN and estimation network; the GMM lives in :mod:`broker_filter.model.gmm`."""

    def __init__(self, config: NetworkConfig) -> None:
        super().__init__()
        self.config = config
        rnn = RNN_TYPES[config.model_type]
        directions = 2 if config.bidirectional else 1
        dropout = config.drop_frac if config.num_layers > 1 else 0.0
        common = dict(hidden_size=config.size, num_layers=config.num_layers, batch_first=True,
                      dropout=dropout, bidirectional=config.bidirectional)
        self.encoder = rnn(input_size=len(INPUT_FEATURES), **common)
        self.to_embedding = nn.Linear(config.size * directions, config.embedding)
        self.decoder = rnn(input_size=config.embedding + 1, **common)
        self.to_magnitude = nn.Linear(config.size * directions, 1)
        layers: list[nn.Module] = []
        width = config.z_dim
        for _ in range(config.estnet_layers):
            layers += [nn.Linear(width, config.estnet_size), nn.Tanh(), nn.Dropout(config.estnet_drop_frac)]
            width = config.estnet_size
        self.estimation = nn.Sequential(*layers, nn.Linear(width, config.num_classes))
        extra = config.support_dim + (len(SHAPE_FEATURES) if config.shape_features else 0)
        self.register_buffer("support_mean", torch.zeros(extra))
        self.register_buffer("support_std", torch.ones(extra))

    def set_support_statistics(self, inputs: torch.Tensor, lengths: torch.Tensor, supports: torch.Tensor) -> None:
        """Standardise supports (and shape features) with these (training-set) statistics from now on."""
        with torch.no_grad():
            values = torch.cat([self._raw_supports(inputs[i : i + 4096], lengths[i : i + 4096], supports[i : i + 4096])
                                for i in range(0, supports.shape[0], 4096)])
        self.support_mean.copy_(values.mean(dim=0))
        self.support_std.copy_(values.std(dim=0).clamp_min(1e-6))

    def _raw_supports(self, inputs: torch.Tensor, lengths: torch.Tensor, supports: torch.Tensor) -> torch.Tensor:
        """The supports as the estimation network reads them, before standardisation."""
        if self.config.drop_mean_mag:
            supports = torch.stack([torch.log10(supports[:, 1]), supports[:, 2]], dim=1)
        if self.config.shape_features:
            supports = torch.cat([supports, shape_features(inputs, lengths)], dim=1)
        return supports

    def encode(self, inputs: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Embedding (N, E) of each chunk, from the encoder state at its last real point.

        A unidirectional RNN runs on the padded batch and its top-layer output is taken at
        ``lengths - 1`` (points after it cannot influence it); this is several times faster
        than packed sequences on CPU. A bidirectional RNN needs packing, since its
        backward direction would otherwise start in the padding.
        """
        if self.config.bidirectional:
            packed = pack_padded_sequence(inputs, lengths.cpu(), batch_first=True, enforce_sorted=False)
            _, state = self.encoder(packed)
            hidden = state[0] if isinstance(state, tuple) else state  # LSTM: (h, c)
            last = torch.cat([hidden[-2], hidden[-1]], dim=-1)  # top layer, both directions
        else:
            out, _ = self.encoder(inputs)
            index = (lengths.to(inputs.device) - 1).clamp_min(0)
            last = out[torch.arange(out.shape[0], device=out.device), index]
        return self.to_embedding(last)

    def decode(self, embedding: torch.Tensor, lags: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Reconstructed scaled magnitudes (N, T), zeros at padding."""
        steps = lags.shape[1]
        decoder_in = torch.cat([embedding[:, None, :].expand(-1, steps, -1), lags[:, :, None]], dim=-1)
        if self.config.bidirectional:
            packed = pack_padded_sequence(decoder_in, lengths.cpu(), batch_first=True, enforce_sorted=False)
            out, _ = self.decoder(packed)
            out, _ = pad_packed_sequence(out, batch_first=True, total_length=steps)
        else:
            out, _ = self.decoder(decoder_in)
        mask = length_mask(lengths.to(lags.device), steps)
        return torch.where(mask, self.to_magnitude(out).squeeze(-1), torch.zeros_like(lags))

    def forward(self, inputs: torch.Tensor, lengths: torch.Tensor, supports: torch.Tensor) -> NetworkOutput:
        """inputs (N, T, 2) [lag, scaled mag], lengths (N,) int64, supports (N, 3) raw."""
        embedding = self.encode(inputs, lengths)
        reconstruction = self.decode(embedding, inputs[:, :, 0], lengths)
        features = reconstruction_features(inputs[:, :, 1], reconstruction, lengths)
        standardised = (self._raw_supports(inputs, lengths, supports) - self.support_mean) / self.support_std
        z = torch.cat([embedding, features, standardised], dim=1)
        logits = self.estimation(z)
        return NetworkOutput(reconstruction, embedding, z, logits, torch.softmax(logits, dim=1))


def length_mask(lengths: torch.Tensor, steps: int) -> torch.Tensor:
    """(N, T) bool, True on real points."""
    return torch.arange(steps, device=lengths.device)[None, :] < lengths[:, None]


def reconstruction_features(target: torch.Tensor, reconstruction: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """DAGMM's two reconstruction features over real points: relative Euclidean distance and cosine similarity."""
    mask = length_mask(lengths.to(target.device), target.shape[1])
    x = torch.where(mask, target, torch.zeros_like(target))
    y = torch.where(mask, reconstruction, torch.zeros_like(reconstruction))
    x_norm = x.norm(dim=1)
    distance = (x - y).norm(dim=1) / (x_norm + _EPS)
    cosine = (x * y).sum(dim=1) / (x_norm * y.norm(dim=1) + _EPS)
    return torch.stack([distance, cosine], dim=1)


def shape_features(inputs: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """(N, 9) :data:`SHAPE_FEATURES` of each chunk, over its real points.

    ``inputs[..., 1]`` is the scaled magnitude (mean 0, standard deviation 1 per chunk) in
    phase order; the phase is the running sum of the lags (its origin does not matter:
    amplitudes and phi21 do not depend on it). Computed in float32 even under autocast:
    fourth powers and running sums of phases lose too much in float16.
    """
    with torch.autocast(inputs.device.type, enabled=False):
        return _shape_features(inputs.float(), lengths)


def _shape_features(inputs: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    mask = length_mask(lengths.to(inputs.device), inputs.shape[1])
    n = lengths.to(inputs.device, inputs.dtype)
    y = torch.where(mask, inputs[:, :, 1], torch.zeros_like(inputs[:, :, 1]))
    skewness = (y**3).sum(dim=1) / n
    kurtosis = (y**4).sum(dim=1) / n - 3.0
    big = torch.full_like(y, torch.finfo(y.dtype).max)
    spread = torch.where(mask, y, -big).amax(dim=1) - torch.where(mask, y, big).amin(dim=1)
    steps = torch.where(mask[:, 1:], torch.diff(y, dim=1), torch.zeros_like(y[:, 1:]))
    eta = (steps**2).sum(dim=1) / (n - 1).clamp_min(1.0)
    angle = 2 * torch.pi * torch.cumsum(inputs[:, :, 0], dim=1)
    harmonics = []
    for k in (1, 2):
        a = 2 * torch.where(mask, y * torch.cos(k * angle), torch.zeros_like(y)).sum(dim=1) / n
        b = 2 * torch.where(mask, y * torch.sin(k * angle), torch.zeros_like(y)).sum(dim=1) / n
        harmonics.append((torch.sqrt(a * a + b * b), torch.atan2(b, a)))
    (a1, phi1), (a2, phi2) = harmonics
    phi21 = phi2 - 2 * phi1
    fainter = torch.where(mask, (y > 0).to(y.dtype), torch.zeros_like(y)).sum(dim=1) / n
    return torch.stack([skewness, kurtosis, spread, eta, a1, a2 / (a1 + 1e-3), torch.cos(phi21), torch.sin(phi21), fainter], dim=1)
