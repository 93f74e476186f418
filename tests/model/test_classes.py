"""The class mapping: the paper's eight classes by default, novel sets, mapping files."""

from __future__ import annotations

import json

import pytest

from broker_filter.model.classes import ClassMapping, MappingError


def test_default_is_the_papers_eight_classes():
    mapping = ClassMapping()
    assert mapping.known == ("SR", "M", "RRAB", "RRCD", "ECL", "CEPH", "DSCT", "ROT")
    assert mapping.label_of("RRab") == "RRAB" and mapping.label_of("RR_Lyrae_FM") == "RRAB"
    assert mapping.label_of("RRc") == "RRCD" and mapping.label_of("RR_Lyrae_DM") == "RRCD"
    assert mapping.index_of("RS_CVn") == 7
    assert mapping.label_of("ChemPeculiar") is None and mapping.is_novel("ChemPeculiar")
    assert mapping.novelty_set_of("SNIa") == "SNIa" and mapping.novelty_set_of("RCB") == "VAR"
    assert not mapping.is_novel("Mira") and not mapping.is_novel(None)
    assert mapping.label_of("SomethingElse") is None and not mapping.is_novel("SomethingElse")


def test_mapping_files_toml_and_json(tmp_path):
    toml = tmp_path / "m.toml"
    toml.write_text('[classes]\nRR = ["RRab", "RRc"]\nM = ["Mira"]\n[novel]\nVAR = ["RCB"]\n')
    mapping = ClassMapping.from_file(toml)
    assert mapping.known == ("RR", "M") and mapping.label_of("RRc") == "RR" and mapping.is_novel("RCB")
    path = tmp_path / "m.json"
    path.write_text(json.dumps(mapping.to_dict()))
    assert ClassMapping.from_file(path).to_dict() == mapping.to_dict()


def test_bad_mappings_are_refused(tmp_path):
    with pytest.raises(MappingError, match="both"):
        ClassMapping(classes={"A": ["x"], "B": ["x"]}, novel={})
    with pytest.raises(MappingError, match="no such"):
        ClassMapping.from_file(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[classes\n")
    with pytest.raises(MappingError, match="cannot parse"):
        ClassMapping.from_file(bad)
    empty = tmp_path / "empty.json"
    empty.write_text("{}")
    with pytest.raises(MappingError, match="classes"):
        ClassMapping.from_file(empty)
