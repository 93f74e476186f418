"""The training options as one typed object, importable without torch (the CLI builds its parser from it)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING

from broker_filter.model.features import DEFAULT_BANDS, PreprocessConfig

if TYPE_CHECKING:
    from broker_filter.model.network import NetworkConfig


class TrainError(ValueError):
    """A training request that cannot run (no labelled data, a resume that does not match)."""


@dataclass(frozen=True)
class TrainConfig:
    """All training options; the paper's ones keep the paper's names (Tsang & Schultz 2019).

    Architecture: model_type (gru, lstm, vanilla), size, num_layers, embedding, drop_frac,
    bidirectional, estnet_size, estnet_drop_frac. Preprocessing: n_min, n_max,
    period_fold, bands, use_catalogue_period. Optimisation: batch_size, lr, gmm_on (joint
    training; False: sequential), nb_epoch (joint epochs, or autoencoder epochs when
    sequential), cls_epoch (estimation-network epochs, sequential mode only), lambda1
    (energy weight). Data: class_prob (the ASAS-SN loader's class_probability cut,
    recorded here), ss_resid (drop training chunks whose folded curve is not smooth:
    phase-binned residual over scatter above this; the paper cut on the catalogue's
    super-smoother residual, which our archives lack; None keeps all). Ours: seed,
    val_frac, patience (early stopping, epochs), class_weight ("balanced" or "none"),
    device ("auto", "cpu", "cuda", ...), quiet (no progress bar).

    The defaults are the shipped default bundle's configuration (broker_filter/model/bundles/default),
    sized so that it trains in under 20 minutes on 2 CPU cores.
    """

    model_type: str = "gru"
    size: int = 48
    num_layers: int = 2
    embedding: int = 16
    drop_frac: float = 0.25
    bidirectional: bool = False
    estnet_size: int = 16
    estnet_drop_frac: float = 0.5
    n_min: int = 20
    n_max: int = 200
    period_fold: bool = True
    bands: tuple[str, ...] | None = DEFAULT_BANDS
    use_catalogue_period: bool = False
    batch_size: int = 64
    nb_epoch: int = 100
    cls_epoch: int = 40
    lr: float = 1e-3
    gmm_on: bool = True
    lambda1: float = 0.001
    class_prob: float = 0.9
    ss_resid: float | None = None
    seed: int = 0
    val_frac: float = 0.2
    patience: int = 20
    class_weight: str = "balanced"
    device: str = "auto"
    quiet: bool = False

    def __post_init__(self) -> None:
        if self.bands is not None:
            object.__setattr__(self, "bands", tuple(self.bands))
        if self.class_weight not in ("balanced", "none"):
            raise TrainError(f"class_weight must be 'balanced' or 'none', got {self.class_weight!r}")
        if not 0.0 < self.val_frac < 1.0:
            raise TrainError("val_frac must be in (0, 1)")

    def preprocess(self) -> PreprocessConfig:
        return PreprocessConfig(n_min=self.n_min, n_max=self.n_max, period_fold=self.period_fold,
                                bands=self.bands, use_catalogue_period=self.use_catalogue_period)

    def network(self, num_classes: int) -> NetworkConfig:
        from broker_filter.model.network import NetworkConfig

        return NetworkConfig(model_type=self.model_type, size=self.size, num_layers=self.num_layers,
                             embedding=self.embedding, drop_frac=self.drop_frac, bidirectional=self.bidirectional,
                             num_classes=num_classes, estnet_size=self.estnet_size,
                             estnet_drop_frac=self.estnet_drop_frac)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["bands"] = None if self.bands is None else list(self.bands)
        return data

    @classmethod
    def from_dict(cls, data: Mapping) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})
