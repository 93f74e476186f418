"""The RNN autoencoder and estimation network (Naul et al. 2018; Tsang & Schultz 2019).

::

    inputs (N, T, 2) [lag, scaled mag] --encoder RNN--> last state --linear--> embedding (E)
    [embedding repeated T times, lag] --decoder RNN--> --linear--> reconstruction (N, T)
    z = [embedding, relative distance, cosine similarity, standardised supports]  (E + 2 + 3)
    z --dense(estnet_size), tanh, dropout--> --dense--> logits (K) --softmax--> gamma

Padding beyond ``lengths`` changes no output: the encoder state is taken at each chunk's
last real point, the reconstruction is zero at padding, and the reconstruction features
are computed over real points only. ``gamma`` is both the class probabilities and the
GMM memberships. The supports (mean magnitude, scale, log10 period) are standardised with
training-set statistics held in buffers, so that the saved weights are self-contained.
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
_EPS = 1e-8


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

    def __post_init__(self) -> None:
        if self.model_type not in RNN_TYPES:
            raise ValueError(f"model_type must be one of {sorted(RNN_TYPES)}, got {self.model_type!r}")
        for name in ("size", "num_layers", "embedding", "num_classes", "estnet_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        for name in ("drop_frac", "estnet_drop_frac"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1)")

    @property
    def z_dim(self) -> int:
        """Estimation-network input size: embedding + 2 reconstruction features + 3 supports."""
        return self.embedding + len(RECONSTRUCTION_FEATURES) + len(SUPPORT_FEATURES)

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
        self.estimation = nn.Sequential(
            nn.Linear(config.z_dim, config.estnet_size),
            nn.Tanh(),
            nn.Dropout(config.estnet_drop_frac),
            nn.Linear(config.estnet_size, config.num_classes),
        )
        self.register_buffer("support_mean", torch.zeros(len(SUPPORT_FEATURES)))
        self.register_buffer("support_std", torch.ones(len(SUPPORT_FEATURES)))

    def set_support_statistics(self, supports: torch.Tensor) -> None:
        """Standardise supports with these (training-set) statistics from now on."""
        self.support_mean.copy_(supports.mean(dim=0))
        self.support_std.copy_(supports.std(dim=0).clamp_min(1e-6))

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
        standardised = (supports - self.support_mean) / self.support_std
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
