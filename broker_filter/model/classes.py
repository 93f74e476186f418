"""Which survey classes the model learns, and which it must flag as novel.

The default is the paper's eight classes (Tsang & Schultz 2019) with the survey class
names of ASAS-3 (Richards et al. 2012) and Stripe 82 (Sesar et al. 2010) mapped onto
them; every other listed class is "novel" (the paper's VAR class) and is never trained
on. ZTF SN Ia form a second novelty set: transients, which no periodic class fits.

A mapping file (JSON or TOML) replaces the default::

    [classes]
    SR = ["Semireg_PV", "SARG_A"]
    M = ["Mira"]
    [novel]
    VAR = ["ChemPeculiar", "RCB"]
    SNIa = ["SNIa"]

Survey classes mapped nowhere are "unknown": neither trained on nor counted as novel.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

PAPER_CLASSES: dict[str, tuple[str, ...]] = {
    "SR": ("Semireg_PV", "SARG_A", "SARG_B", "LSP", "RSG"),
    "M": ("Mira",),
    "RRAB": ("RR_Lyrae_FM", "RRab"),
    "RRCD": ("RR_Lyrae_FO", "RR_Lyrae_DM", "RRc"),
    "ECL": ("W_Ursae_Maj", "Beta_Lyrae", "Beta_Persei"),
    "CEPH": ("Classical_Cepheid", "MultiMode_Cepheid", "PopII_Cepheid", "RV_Tauri"),
    "DSCT": ("Delta_Scuti", "SX_Phe"),
    "ROT": ("RS_CVn",),
}

PAPER_NOVEL: dict[str, tuple[str, ...]] = {
    "VAR": (
        "ChemPeculiar",
        "Beta_Cephei",
        "RCB",
        "Weakline_T_Tauri",
        "ClassT_Tauri",
        "Herbig_AEBE",
        "Pulsating_Be",
        "S_Doradus",
        "Ellipsoidal",
    ),
    "SNIa": ("SNIa",),
}


class MappingError(ValueError):
    """A class-mapping file that is missing, unparsable or inconsistent."""


@dataclass(frozen=True)
class ClassMapping:
    """Survey class name -> model class (known) or novelty set (novel).

    ``classes`` maps each known model class to the survey classes it gathers; its order
    is the order of the network's outputs. ``novel`` maps each novelty set (``VAR``,
    ``SNIa``) to its survey classes.
    """

    classes: Mapping[str, Sequence[str]] = field(default_factory=lambda: dict(PAPER_CLASSES))
    novel: Mapping[str, Sequence[str]] = field(default_factory=lambda: dict(PAPER_NOVEL))

    def __post_init__(self) -> None:
        seen: dict[str, str] = {}
        for group, members in [*self.classes.items(), *self.novel.items()]:
            for survey_class in members:
                if survey_class in seen:
                    raise MappingError(f"survey class {survey_class!r} is mapped to both {seen[survey_class]!r} and {group!r}")
                seen[survey_class] = group
        if not self.classes:
            raise MappingError("a class mapping needs at least one known class")
        object.__setattr__(self, "_known_of", {s: k for k, m in self.classes.items() for s in m})
        object.__setattr__(self, "_novel_of", {s: k for k, m in self.novel.items() for s in m})

    @property
    def known(self) -> tuple[str, ...]:
        """The model's classes, in output order."""
        return tuple(self.classes)

    def label_of(self, survey_class: str | None) -> str | None:
        """The model class of a survey class, or None if it is novel or unmapped."""
        return self._known_of.get(survey_class) if survey_class is not None else None

    def index_of(self, survey_class: str | None) -> int | None:
        """The output index of a survey class's model class, or None."""
        label = self.label_of(survey_class)
        return None if label is None else self.known.index(label)

    def is_novel(self, survey_class: str | None) -> bool:
        """True if the survey class belongs to any novelty set."""
        return survey_class is not None and survey_class in self._novel_of

    def novelty_set_of(self, survey_class: str | None) -> str | None:
        """The novelty set (e.g. ``VAR``, ``SNIa``) of a survey class, or None."""
        return self._novel_of.get(survey_class) if survey_class is not None else None

    def to_dict(self) -> dict[str, dict[str, list[str]]]:
        return {"classes": {k: list(v) for k, v in self.classes.items()}, "novel": {k: list(v) for k, v in self.novel.items()}}

    @classmethod
    def from_dict(cls, data: Mapping) -> ClassMapping:
        if not isinstance(data.get("classes"), Mapping):
            raise MappingError("a class mapping needs a 'classes' table of model class -> [survey classes]")
        return cls(
            classes={str(k): tuple(map(str, v)) for k, v in data["classes"].items()},
            novel={str(k): tuple(map(str, v)) for k, v in data.get("novel", {}).items()},
        )

    @classmethod
    def from_file(cls, path: str | Path) -> ClassMapping:
        """Read a JSON (``.json``) or TOML (any other suffix) mapping file."""
        path = Path(path)
        if not path.is_file():
            raise MappingError(f"{path}: no such class-mapping file")
        try:
            data = json.loads(path.read_text()) if path.suffix == ".json" else tomllib.loads(path.read_text())
        except (json.JSONDecodeError, tomllib.TOMLDecodeError) as error:
            raise MappingError(f"{path}: cannot parse ({error})") from error
        try:
            return cls.from_dict(data)
        except MappingError as error:
            raise MappingError(f"{path}: {error}") from error
