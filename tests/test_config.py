"""Config layer: precedence, repeated modules, overrides and errors that name what is wrong."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from cac_mhub.chain import ChainError, build_modules
from cac_mhub.config import apply_overrides, config_hash, load, resolve


def raw(**modules):
    return {
        "general": {"name": "t"},
        "execute": ["DicomImporter", {"module": "NiftiConverter", "write_nifti": True}, "ReportExporter"],
        "modules": modules,
    }


def test_precedence_defaults_then_modules_then_execute_then_overrides():
    config = resolve(apply_overrides(raw(NiftiConverter={"write_nifti": False, "irregular_slices": "resample"},
                                         DicomImporter={"min_slices": 20}),
                                     ["modules.DicomImporter.min_slices=30", "execute.1.nifti_name=v.nii.gz"]))
    importer, converter, _ = config["execute"]
    assert importer["options"]["min_slices"] == 30  # override beats modules section
    assert importer["options"]["max_increment_mm"] == 3.0  # declared default
    assert converter["options"]["write_nifti"] is True  # execute entry beats modules section
    assert converter["options"]["irregular_slices"] == "resample"  # modules section beats default
    assert converter["options"]["nifti_name"] == "v.nii.gz"


def test_same_module_twice_keeps_separate_options():
    config = resolve({"execute": ["DicomImporter", {"module": "NiftiConverter", "nifti_name": "a.nii.gz"},
                                  {"module": "NiftiConverter", "nifti_name": "b.nii.gz"}]})
    names = [e["options"]["nifti_name"] for e in config["execute"][1:]]
    assert names == ["a.nii.gz", "b.nii.gz"]
    assert len(build_modules(config["execute"])) == 3


@pytest.mark.parametrize("bad, message", [
    ({"execute": ["NoSuchModule"]}, "unknown module 'NoSuchModule'"),
    ({"execute": [{"module": "DicomImporter", "min_slice": 3}]}, "unknown option 'min_slice'"),
    ({"execute": [{"module": "DicomImporter", "min_slices": "ten"}]}, "DicomImporter.min_slices: expected int"),
    ({"execute": [{"module": "DicomImporter", "allow_derived": "yes"}]}, "DicomImporter.allow_derived: expected bool"),
    ({"execute": [{"module": "DicomImporter", "min_slices": True}]}, "expected int, got bool"),
    ({"execute": [{"module": "NiftiConverter", "gantry_tilt": "ignore"}]}, "'ignore' is not one of"),
    ({"execute": ["DicomImporter"], "modules": {"Nope": {}}}, "unknown module 'Nope'"),
    ({"execute": ["DicomImporter"], "extra": 1}, "unknown config section(s): extra"),
    ({"execute": ["DicomImporter"], "general": {"colour": "red"}}, "general: unknown key(s) colour"),
    ({"execute": []}, "execute: must be a non-empty list"),
])
def test_errors_name_the_problem(bad, message):
    with pytest.raises(ChainError) as error:
        resolve(bad)
    assert message in str(error.value)


def test_int_accepted_for_float_option():
    config = resolve({"execute": [{"module": "DicomImporter", "max_increment_mm": 5}]})
    assert config["execute"][0]["options"]["max_increment_mm"] == 5.0


def test_config_hash_is_stable_and_sensitive():
    a, b = resolve(raw()), resolve(raw())
    assert config_hash(a) == config_hash(b)
    c = resolve(apply_overrides(raw(), ["modules.DicomImporter.min_slices=11"]))
    assert config_hash(c) != config_hash(a)


def test_load_workflow_and_config_file(tmp_path: Path):
    config = load(workflow="import")
    assert [e["module"] for e in config["execute"]] == ["DicomImporter", "NiftiConverter", "ReportExporter"]
    path = tmp_path / "c.yml"
    path.write_text(yaml.safe_dump(raw()))
    assert load(config=path)["general"]["name"] == "t"
    with pytest.raises(ChainError, match="unknown workflow 'nope'"):
        load(workflow="nope")
    with pytest.raises(ChainError, match="config file not found"):
        load(config=tmp_path / "missing.yml")
    path.write_text("execute: [DicomImporter\n")
    with pytest.raises(ChainError, match="not valid YAML"):
        load(config=path)


def test_every_shipped_workflow_validates():
    for path in sorted((Path(__file__).resolve().parents[1] / "config").glob("*.yml")):
        config = load(config=path)
        build_modules(config["execute"])
