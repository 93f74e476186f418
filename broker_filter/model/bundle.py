"""A trained model as one directory: ``model.safetensors`` + ``bundle.json``.

``bundle.json`` holds everything but the weights: the architecture, class names and
mapping, preprocessing constants, the frozen GMM (phi, mu, Cholesky factors), the
novelty thresholds (80th and 95th percentiles of training energies, per object), the
calibration (temperature and held-out energies by number of points, see
:mod:`broker_filter.model.calibration`), the training data digest and configuration, metrics, the code version, and the sha256 of
every weight file. Loading verifies those digests and refuses a mismatch; weights are
read with safetensors, never unpickled (``torch.load`` is not used anywhere).

``ModelBundle.load()`` with no path loads the default bundle committed in the package
(``broker_filter/model/bundles/default``), which the daemon and the demo use without flags.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from broker_filter.model.calibration import Calibration
from broker_filter.model.classes import ClassMapping
from broker_filter.model.lightcurve import LightCurve
from broker_filter.model.features import PreparedBatch, PreprocessConfig, prepare_batch
from broker_filter.model.gmm import GMMParameters, energy
from broker_filter.model.network import AutoencoderGMM, NetworkConfig
from broker_filter.model.scores import THRESHOLD_KEYS, ObjectScore, combine_chunks, object_scores

DEFAULT_BUNDLE_DIR = Path(__file__).resolve().parent / "bundles" / "default"
WEIGHTS_FILE = "model.safetensors"
MANIFEST_FILE = "bundle.json"
FORMAT = "broker-filter-model-bundle"
FORMAT_VERSION = 1


class BundleError(ValueError):
    """A bundle directory that is missing, incomplete, tampered with or inconsistent."""


def code_version() -> str:
    """The installed broker-filter distribution's version (the bundle records what wrote it)."""
    try:
        return metadata.version("broker-filter")
    except metadata.PackageNotFoundError:
        return "unknown"


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"``: CUDA when available, else CPU; anything else is passed to torch."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


@dataclass
class ModelBundle:
    """A trained network with everything needed to score light curves exactly as in training.

    ``thresholds``: {"p80": float, "p95": float} energy cut-offs of training energies, used
    only when ``calibration`` is None (bundles made before it). ``training`` and
    ``metrics`` are free-form records (data digest, configuration, figures) kept in the
    manifest. ``network`` is in eval mode.
    """

    network: AutoencoderGMM
    preprocess: PreprocessConfig
    class_mapping: ClassMapping
    gmm: GMMParameters
    thresholds: dict[str, float]
    calibration: Calibration | None = None
    training: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    version: str = field(default_factory=code_version)
    created_utc: str = field(default_factory=lambda: datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))

    def __post_init__(self) -> None:
        self.network.eval()
        missing = [key for key in THRESHOLD_KEYS if key not in self.thresholds]
        if missing:
            raise BundleError(f"thresholds lack {missing}")
        if len(self.class_names) != self.network.config.num_classes:
            raise BundleError(f"{len(self.class_names)} class names for a network of {self.network.config.num_classes} outputs")
        if self.gmm.num_components != self.network.config.num_classes or self.gmm.dim != self.network.config.z_dim:
            raise BundleError(f"GMM shape ({self.gmm.num_components}, {self.gmm.dim}) does not fit the network")

    # -- identity ---------------------------------------------------------------------

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.class_mapping.known

    @property
    def network_config(self) -> NetworkConfig:
        return self.network.config

    @cached_property
    def bundle_id(self) -> str:
        """16 hex digits of sha256 over the weights and every field that changes a score.

        Computed once: a bundle's weights and constants are not changed after construction
        (outputs are stamped with this id, so it must not drift)."""
        return _bundle_id(_weights_digest(self.network), self._scoring_content())

    @property
    def manifest(self) -> dict:
        """The ``bundle.json`` content (without the weight-file digests, added by :meth:`save`)."""
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "bundle_id": self.bundle_id,
            "code_version": self.version,
            "created_utc": self.created_utc,
            **self._scoring_content(),
            "training": self.training,
            "metrics": self.metrics,
        }

    def _scoring_content(self) -> dict:
        calibration = {} if self.calibration is None else {"calibration": self.calibration.to_dict()}
        return {
            "architecture": self.network.config.to_dict(),
            "class_names": list(self.class_names),
            "class_mapping": self.class_mapping.to_dict(),
            "preprocess": self.preprocess.to_dict(),
            "gmm": self.gmm.to_dict(),
            "thresholds": {key: float(self.thresholds[key]) for key in THRESHOLD_KEYS},
            **calibration,
        }

    # -- persistence ------------------------------------------------------------------

    def save(self, directory: str | Path) -> Path:
        """Write ``model.safetensors`` then ``bundle.json`` (with the weights' sha256) into ``directory``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        weights = {name: t.detach().cpu().contiguous() for name, t in self.network.state_dict().items()}
        weights_path = directory / WEIGHTS_FILE
        # One metadata key: safetensors writes its metadata map in hash order, and two keys
        # would make identical models give different bytes (and file digests).
        save_file(weights, str(weights_path), metadata={"format": FORMAT})
        weights_path.chmod(0o644)
        manifest = self.manifest
        manifest["files"] = {WEIGHTS_FILE: {"sha256": _file_sha256(weights_path), "bytes": weights_path.stat().st_size}}
        _atomic_write_text(directory / MANIFEST_FILE, json.dumps(manifest, indent=1, sort_keys=False) + "\n")
        return directory

    @classmethod
    def load(cls, path: str | Path | None = None, device: str | torch.device = "cpu") -> ModelBundle:
        """Load and verify a bundle directory (default: the packaged default bundle).

        Raises :class:`BundleError` with one clear line if a file is missing, a digest does
        not match (tampered or corrupted weights) or the content is inconsistent.
        """
        directory = Path(path) if path is not None else DEFAULT_BUNDLE_DIR
        manifest_path = directory / MANIFEST_FILE
        if not manifest_path.is_file():
            raise BundleError(f"{directory}: not a model bundle (no {MANIFEST_FILE})")
        try:
            manifest = json.loads(manifest_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise BundleError(f"{manifest_path}: invalid JSON ({error})") from error
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT or manifest.get("format_version") != FORMAT_VERSION:
            raise BundleError(f"{manifest_path}: not a {FORMAT} v{FORMAT_VERSION} manifest")
        _verify_files(directory, manifest)
        try:
            network = AutoencoderGMM(NetworkConfig.from_dict(manifest["architecture"]))
            network.load_state_dict(load_file(str(directory / WEIGHTS_FILE)), strict=True)
            bundle = cls(
                network=network.to(resolve_device(device)),
                preprocess=PreprocessConfig.from_dict(manifest["preprocess"]),
                class_mapping=ClassMapping.from_dict(manifest["class_mapping"]),
                gmm=GMMParameters.from_dict(manifest["gmm"]),
                thresholds={key: float(manifest["thresholds"][key]) for key in THRESHOLD_KEYS},
                calibration=Calibration.from_dict(manifest["calibration"]) if "calibration" in manifest else None,
                training=manifest.get("training", {}),
                metrics=manifest.get("metrics", {}),
                version=manifest.get("code_version", "unknown"),
                created_utc=manifest.get("created_utc", ""),
            )
        except (KeyError, TypeError, ValueError, AttributeError, RuntimeError, SafetensorError) as error:
            raise BundleError(f"{directory}: inconsistent bundle ({type(error).__name__}: {str(error)[:300]})") from error
        if manifest.get("class_names") != list(bundle.class_names):
            raise BundleError(f"{manifest_path}: class_names disagree with class_mapping")
        if manifest.get("bundle_id") != bundle.bundle_id:
            raise BundleError(f"{manifest_path}: bundle_id {manifest.get('bundle_id')} does not match its content ({bundle.bundle_id})")
        return bundle

    def novelty_cut(self, n_points: int, key: str) -> float:
        """The energy above which an object of ``n_points`` is novel at ``key`` ("p80", "p95"):
        the calibration's cut for that length (on the energy alone, see
        :meth:`~broker_filter.model.calibration.Calibration.threshold`), or the single threshold
        of an uncalibrated bundle."""
        if self.calibration is None:
            return float(self.thresholds[key])
        return float(self.calibration.threshold(n_points, key)[0])

    # -- reference scoring --------------------------------------------------------------

    @torch.inference_mode()
    def chunk_outputs(self, batch: PreparedBatch, device: str | torch.device = "cpu", batch_size: int = 1024):
        """Per-chunk (log-probabilities (N, K), energies (N,)) as float64 numpy arrays."""
        device = resolve_device(device)
        network = self.network.to(device).eval()
        gmm = self.gmm.to(device, torch.float32)
        log_probs, energies = [], []
        for start in range(0, len(batch), batch_size):
            part = slice(start, start + batch_size)
            out = network(
                torch.from_numpy(batch.inputs[part]).to(device),
                torch.from_numpy(batch.lengths[part]),
                torch.from_numpy(batch.supports[part]).to(device),
            )
            log_probs.append(torch.log_softmax(out.logits, dim=1).double().cpu().numpy())
            energies.append(energy(out.z, gmm).double().cpu().numpy())
        k = self.network.config.num_classes
        if not log_probs:
            return np.zeros((0, k)), np.zeros(0)
        return np.concatenate(log_probs), np.concatenate(energies)

    def score(self, lcs: Sequence[LightCurve], device: str | torch.device = "cpu") -> list[ObjectScore]:
        """One :class:`ObjectScore` per object with at least one chunk, in first-appearance order.

        Light curves of one object (several bands) are combined: length-weighted mean chunk
        log-probability (temperature-scaled, renormalised) and mean chunk energy (see :mod:`broker_filter.model.scores`). Objects with no
        usable chunk (fewer than ``n_min`` points in every accepted band) are left out.
        """
        batch = prepare_batch(lcs, self.preprocess)
        log_probs, energies = self.chunk_outputs(batch, device)
        object_ids = [lcs[i].object_id for i in batch.owner]
        combined = combine_chunks(object_ids, log_probs, energies, batch.lengths)
        return object_scores(combined, self.class_names, self.thresholds, self.calibration)


def _weights_digest(network: AutoencoderGMM) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(network.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _bundle_id(weights_digest: str, content: Mapping) -> str:
    payload = weights_digest + json.dumps(content, sort_keys=True, allow_nan=False)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _verify_files(directory: Path, manifest: Mapping) -> None:
    files = manifest.get("files")
    if not isinstance(files, Mapping) or WEIGHTS_FILE not in files:
        raise BundleError(f"{directory / MANIFEST_FILE}: no sha256 recorded for {WEIGHTS_FILE}")
    root = directory.resolve()
    for name, entry in files.items():
        path = directory / str(name)
        if not path.resolve().is_relative_to(root) or not isinstance(entry, Mapping):
            raise BundleError(f"{directory / MANIFEST_FILE}: files entry {str(name)[:200]!r} is not a file of the bundle folder")
        if not path.is_file():
            raise BundleError(f"{path}: missing bundle file")
        actual = _file_sha256(path)
        if actual != entry.get("sha256"):
            raise BundleError(f"{path}: sha256 {actual[:12]}… does not match the manifest's {str(entry.get('sha256'))[:12]}…; refusing to load a modified or corrupted bundle")


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _atomic_write_text(path: Path, text: str) -> None:
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(handle, "w") as out:
        out.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
