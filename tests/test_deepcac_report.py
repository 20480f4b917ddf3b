"""MHub parity outputs (DeepCAC.report.json) and `cac-mhub models` for the DeepCAC2 backend."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydicom.dataset import Dataset

from cac_mhub.chain import Context, Instance, module_class
from cac_mhub.types import Labels, Series, Volume


def module(name: str, **overrides: Any):  # type: ignore[no-untyped-def]
    cls = module_class(name)
    options = {key: option.default for key, option in cls.options.items()}
    options.update({key: cls.options[key].check(name, key, value) for key, value in overrides.items()})
    return cls(**options)


def series(uid: str, patient: str = "P-1") -> Series:
    header = Dataset()
    header.PatientID = patient
    header.SeriesInstanceUID = uid
    return Series(uid=uid, study_uid="1.2", files=[], headers=[header], modality="CT")


def scored_instance(key: str, uid: str, mapped: bool = False) -> Instance:
    hu = np.full((2, 16, 16), -50, dtype=np.int16)
    labels = np.zeros(hu.shape, dtype=np.uint8)
    labels[1, 2:4, 2:5] = 1  # 6 pixels
    hu[1, 2, 2] = 450
    hu[1, 2:4, 4:6] = 300  # a bright region half inside the prediction: the mapped mask takes it whole
    volume = Volume(hu=hu, spacing_zyx=(2.5, 0.7, 0.7), origin_lps=(0, 0, 0))
    return Instance(key=key, series=series(uid), volume=volume,
                    labels=Labels(array=labels, names={1: "CAC"}, source="model:deepcac2", extra={"mapped": mapped}))


def test_published_field_names_per_series_and_for_the_cohort(tmp_path: Path) -> None:
    ctx = Context(input_dir=tmp_path, output_dir=tmp_path, config={})
    exporter = module("DeepCacReportExporter", mapped_scores=True)
    exporter.begin([], ctx)
    assert json.loads((tmp_path / "DeepCAC.report.json").read_text()) == []
    scored = scored_instance("a", "1.2.3.4")
    skipped = Instance(key="b", series=series("1.2.3.5", "P-2"), status="skipped", reason="no heart")
    unselected = Instance(key="c", series=Series(uid="9", study_uid="1", files=[], headers=[], selected=False))
    for instance in (scored, skipped, unselected):
        exporter.run(instance, ctx)
    per_series = json.loads((tmp_path / "a" / "DeepCAC.report.json").read_text())
    # unmapped: 6 pixels, peak 450 HU: 6 x 0.408 x 4 = 9.792 -> 10
    # mapped: the 300 HU square (4 pixels, 2 outside the prediction) -> 4 x 0.408 x 3 = 4.896 -> 5; the
    # lone 450 HU pixel is 1 pixel (dropped); the -50 HU pixels are gone
    assert per_series == {"SeriesInstanceUID": "1.2.3.4", "PatientID": "P-1", "Predicted Agatston Score": 10,
                          "Predicted Risk Group": 1, "Mapped Predicted Agatston Score": 5,
                          "Mapped Predicted Risk Group": 1}
    assert scored.outputs["deepcac_report"] == "a/DeepCAC.report.json"
    assert not (tmp_path / "b").exists()
    exporter.finish([scored, skipped, unselected], ctx)
    cohort = json.loads((tmp_path / "DeepCAC.report.json").read_text())
    assert cohort == [per_series, {"SeriesInstanceUID": "1.2.3.5", "PatientID": "P-2"}]
    assert (tmp_path / "DeepCAC.report.json").read_text().startswith("[\n    {\n        \"SeriesInstanceUID\"")


def test_a_runner_mapped_mask_is_reported_under_the_mapped_names(tmp_path: Path) -> None:
    ctx = Context(input_dir=tmp_path, output_dir=tmp_path, config={})
    instance = scored_instance("a", "1.2.3.4", mapped=True)
    module("DeepCacReportExporter", patient_id="omit").run(instance, ctx)
    assert instance.report["deepcac_report"] == {"SeriesInstanceUID": "1.2.3.4", "Mapped Predicted Agatston Score": 10,
                                                 "Mapped Predicted Risk Group": 1}


def test_models_command_says_where_the_deepcac2_weights_go(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from cac_mhub.segmentation.command import cmd_models

    assert cmd_models(argparse.Namespace(root=tmp_path, verify=False)) == 1
    out = capsys.readouterr().out
    assert f"weights not found: put vivid-haze-6_model.pt in {tmp_path / 'deepcac2'}" in out
    (tmp_path / "deepcac2").mkdir()
    (tmp_path / "deepcac2" / "vivid-haze-6_model.pt").write_bytes(b"x")
    assert cmd_models(argparse.Namespace(root=tmp_path, verify=False)) == 0
    assert f"installed: {tmp_path / 'deepcac2' / 'vivid-haze-6_model.pt'}" in capsys.readouterr().out


@pytest.mark.slow
def test_deepcac2_workflow_end_to_end_from_dicom(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`cac-mhub run --workflow deepcac2` with random reduced-width weights: our report, SEG, SR and
    DeepCAC2's own report side by side."""
    torch = pytest.importorskip("torch")
    from cac_mhub.cli import main
    from cac_mhub.phantom.command import write_case
    from cac_mhub.segmentation.deepcac2_net import UNet3D

    write_case(tmp_path / "in", 4250, size=256, increment=3.0, burden="severe", z_extent_mm=200.0)
    models = tmp_path / "models"
    (models / "deepcac2").mkdir(parents=True)
    torch.manual_seed(0)
    torch.save(UNet3D(1, 1, (4, 8, 16, 32)).state_dict(), models / "deepcac2" / "vivid-haze-6_model.pt")
    monkeypatch.setenv("CAC_MHUB_MODELS_DIR", str(models))
    out = tmp_path / "out"
    code = main(["run", "--input", str(tmp_path / "in" / "dicom"), "--output", str(out), "--workflow", "deepcac2",
                 "--quiet", "--set", "modules.DeepCac2Runner.features=[4, 8, 16, 32]",
                 "--set", "modules.DeepCac2Runner.device=cpu",  # edge_windows: as_published by default
                 "--set", "modules.DeepCac2Runner.batch_size=8", "--set", "modules.DsegConverter.empty=write"])
    assert code == 0
    [report_path] = out.glob("*/report.json")
    report = json.loads(report_path.read_text())
    assert report["status"] == "scored", report["reason"]
    assert report["segmentation"]["source"] == "model:deepcac2" and len(report["segmentation"]["sha256"]) == 64
    assert report["heart"]["method"] == "image"
    # the report names the localiser and each departure from the published configuration
    block = report["deepcac2"]
    assert block["localiser"] == "image" and block["edge_windows"] == "as_published" and block["pixel_type"] == "int16"
    assert block["published_configuration"] is False
    assert [d.split(" ")[0] for d in block["differences"]] == ["heart", "network"]
    parity = json.loads((report_path.parent / "DeepCAC.report.json").read_text())
    assert set(parity) == {"SeriesInstanceUID", "PatientID", "Predicted Agatston Score", "Predicted Risk Group"}
    assert parity["PatientID"] == "PHANTOM-004250" and parity == report["deepcac_report"]
    assert json.loads((out / "DeepCAC.report.json").read_text()) == [parity]
    assert (report_path.parent / "cac.seg.dcm").is_file() and (report_path.parent / "cac.sr.dcm").is_file()


def test_validate_without_weights_is_a_one_line_config_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    from cac_mhub.cli import main

    monkeypatch.setenv("CAC_MHUB_MODELS_DIR", str(tmp_path))
    assert main(["validate", "--workflow", "deepcac2"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert err.startswith("cac-mhub: config error: DeepCac2Runner: DeepCAC2 weights not found: put vivid-haze-6_model.pt")
    assert str(tmp_path / "deepcac2" / "vivid-haze-6_model.pt") in err
    assert main(["validate", "--workflow", "deepcac2", "--set", "modules.DeepCac2Runner.batch_size=0"]) == 2
    assert "batch_size must be >= 1" in capsys.readouterr().err
