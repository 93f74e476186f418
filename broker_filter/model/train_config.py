"""The training options as one typed object, importable without torch (the CLI builds its parser from it)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING

from broker_filter.model.features import DEFAULT_BANDS, PreprocessConfig

if TYPE_CHECKING:
    from broker_filter.model.network import NetworkConfig


#: What the novelty p-value ranks (:mod:`broker_filter.model.calibration`).
NOVELTY_RULES = ("energy", "energy+uncertainty")


class TrainError(ValueError):
    """A training request that cannot run (no labelled data, a resume that does not match)."""


@dataclass(frozen=True)
class TrainConfig:
    """All training options; the paper's ones keep the paper's names (Tsang & Schultz 2019).

    Architecture: model_type (gru, lstm, vanilla), size, num_layers, embedding, drop_frac,
    bidirectional, estnet_size, estnet_drop_frac, estnet_layers, drop_mean_mag,
    shape_features (see :mod:`broker_filter.model.network`). Preprocessing: n_min, n_max,
    period_fold, bands, use_catalogue_period. Optimisation: batch_size, lr, gmm_on (joint
    training; False: sequential), nb_epoch (joint epochs, or autoencoder epochs when
    sequential), cls_epoch (estimation-network epochs: sequential mode, or after joint
    training with finetune), finetune (joint training, then the estimation network alone
    on the frozen autoencoder for cls_epoch epochs), lambda1
    (energy weight). Data: class_prob (the ASAS-SN loader's class_probability cut,
    recorded here), ss_resid (drop training chunks whose folded curve is not smooth:
    phase-binned residual over scatter above this; the paper cut on the catalogue's
    super-smoother residual, which our archives lack; None keeps all). Ours: seed,
    val_frac, patience (early stopping, epochs), class_weight ("balanced", "sqrt": the
    square root of balanced, or "none"), prefix_sizes (augmentation: each training light
    curve longer than n points also trains as its first n points, period re-estimated on
    them, as a live object is scored), calibrate (fit the novelty p-values and the
    temperature on the validation objects, see :mod:`broker_filter.model.calibration`), novelty
    (what the novelty p-value ranks: "energy", the mixture energy, or "energy+uncertainty",
    the energy combined with the entropy of the class probabilities),
    device ("auto", "cpu", "cuda", ...), quiet (no progress bar).

    The defaults are the shipped default bundle's configuration (broker_filter/model/bundles/default):
    about 260 s of training on one H200; on 2 CPU cores 30 to 60 minutes, estimated from
    per-epoch timings (docs/MODEL.md), not measured end to end.
    """

    model_type: str = "gru"
    size: int = 48
    num_layers: int = 2
    embedding: int = 16
    drop_frac: float = 0.25
    bidirectional: bool = False
    estnet_size: int = 64
    estnet_drop_frac: float = 0.25
    estnet_layers: int = 2
    drop_mean_mag: bool = True
    shape_features: bool = True
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
    finetune: bool = True
    lambda1: float = 0.001
    class_prob: float = 0.9
    ss_resid: float | None = None
    seed: int = 0
    val_frac: float = 0.2
    patience: int = 20
    class_weight: str = "sqrt"
    prefix_sizes: tuple[int, ...] = (20, 30, 50, 100)
    calibrate: bool = True
    novelty: str = "energy"
    device: str = "auto"
    quiet: bool = False

    def __post_init__(self) -> None:
        if self.bands is not None:
            object.__setattr__(self, "bands", tuple(self.bands))
        object.__setattr__(self, "prefix_sizes", tuple(int(n) for n in self.prefix_sizes))
        if self.class_weight not in ("balanced", "sqrt", "none"):
            raise TrainError(f"class_weight must be 'balanced', 'sqrt' or 'none', got {self.class_weight!r}")
        if self.novelty not in NOVELTY_RULES:
            raise TrainError(f"novelty must be one of {list(NOVELTY_RULES)}, got {self.novelty!r}")
        if any(n < self.n_min for n in self.prefix_sizes):
            raise TrainError(f"prefix_sizes must be >= n_min={self.n_min}, got {list(self.prefix_sizes)}")
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
                             estnet_drop_frac=self.estnet_drop_frac, estnet_layers=self.estnet_layers,
                             drop_mean_mag=self.drop_mean_mag, shape_features=self.shape_features)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["bands"] = None if self.bands is None else list(self.bands)
        data["prefix_sizes"] = list(self.prefix_sizes)
        return data

    @classmethod
    def from_dict(cls, data: Mapping) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})
