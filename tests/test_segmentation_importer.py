"""SegmentationImporter: SEG among the inputs or label files by template; no resampling; the rescore workflow."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pydicom
import pytest

from cac_mhub.chain import ChainError, Context, Instance, SkipInstance
from cac_mhub.dicom import seg as S
from cac_mhub.dicom import sr as R
from cac_mhub.modules.segmentation_importer import SegmentationImporter
from cac_mhub.types import Series
from tests.test_seg import EXPECTED, NAMES, make_case

CANONICAL = S.to_canonical


def importer(**options) -> SegmentationImporter:
    defaults = {name: option.default for name, option in SegmentationImporter.options.items()}
    module = SegmentationImporter(**{**defaults, **options})
    return module


def ct_instance(files, headers, volume) -> Instance:
    series = Series(uid=str(headers[0].SeriesInstanceUID), study_uid=str(headers[0].StudyInstanceUID),
                    files=list(files), headers=list(headers), modality="CT")
    return Instance(key=series.uid, series=series, volume=volume)


def seg_series(path: Path) -> Series:
    header = pydicom.dcmread(path, stop_before_pixels=True)
    return Series(uid=str(header.SeriesInstanceUID), study_uid=str(header.StudyInstanceUID), files=[path],
                  headers=[header], modality="SEG", selected=False)


@pytest.fixture
def case(tmp_path: Path):
    files, headers, volume, labels = make_case(tmp_path)
    return tmp_path, files, headers, volume, labels


def write_seg(case, name: str = "cac.seg.dcm", labels=None, names=NAMES) -> Path:
    root, _, headers, volume, original = case
    path = root / "in" / name
    path.parent.mkdir(exist_ok=True)
    labels = original if labels is None else labels
    S.build_seg(S.headers_in_volume_order(headers, volume), labels, names, S.AlgorithmInfo()).save_as(path)
    return path


def write_label_file(case, array, name: str, volume=None) -> Path:
    root, _, _, case_volume, _ = case
    path = root / "in" / "labels" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    import SimpleITK as sitk

    sitk.WriteImage((volume or case_volume).to_sitk(array), str(path))
    return path


def context(case, catalog) -> Context:
    root = case[0]
    return Context(input_dir=root / "in", output_dir=root / "out", config={}, shared={"catalog": catalog})


def test_seg_among_inputs_is_matched_and_decoded(case) -> None:
    _, files, headers, volume, labels = case
    seg_path = write_seg(case)
    instance = ct_instance(files, headers, volume)
    module = importer()
    ctx = context(case, [instance.series, seg_series(seg_path)])
    module.setup(ctx)
    module.run(instance, ctx)
    expected, names = CANONICAL(labels, NAMES)
    assert np.array_equal(instance.labels.array, expected) and instance.labels.names == names
    seg_uid = pydicom.dcmread(seg_path, stop_before_pixels=True).SOPInstanceUID
    assert instance.labels.source == f"seg:{seg_uid}"
    assert instance.labels.extra["seg_file"] == "cac.seg.dcm"
    assert instance.labels.extra["segments"][1] == {"label": "LAD", "artery": "LAD"}


def test_seg_label_map_overrides_and_ignore(case) -> None:
    _, files, headers, volume, labels = case
    instance = ct_instance(files, headers, volume)
    module = importer(label_map={"RCA": "LCX", 3: "ignore"})  # by SegmentLabel and by segment number
    module.setup(ctx := context(case, [seg_series(write_seg(case))]))
    module.run(instance, ctx)
    assert instance.labels.names == {2: "LAD", 3: "LCX"}
    assert int((instance.labels.array == 3).sum()) == int((labels == 4).sum())
    assert int((instance.labels.array == 5).sum()) == 0


def test_latest_of_several_segs_is_used_with_a_warning(case) -> None:
    _, files, headers, volume, labels = case
    older = write_seg(case, "old.seg.dcm", labels=(labels == 2).astype(np.uint8), names={1: "LAD"})
    ds = pydicom.dcmread(older)
    ds.ContentDate = "20000101"
    ds.save_as(older)
    newer = write_seg(case, "new.seg.dcm")
    instance = ct_instance(files, headers, volume)
    module = importer()
    module.setup(ctx := context(case, [seg_series(older), seg_series(newer)]))
    module.run(instance, ctx)
    assert instance.labels.extra["seg_file"] == "new.seg.dcm"
    assert any("2 SEGs" in w for w in instance.warnings)


def test_seg_of_another_grid_is_an_error_not_a_score(case) -> None:
    _, files, headers, volume, _ = case
    instance = ct_instance(files, headers, replace(volume, origin_lps=(-20.0, -20.0, -48.0)))
    module = importer()
    module.setup(ctx := context(case, [seg_series(write_seg(case))]))
    with pytest.raises(S.GeometryMismatch, match="no resampling"):
        module.run(instance, ctx)


def test_seg_of_another_series_is_not_matched(case, tmp_path: Path) -> None:
    _, files, headers, volume, _ = case
    other_files, other_headers, other_volume, other_labels = make_case(tmp_path / "other")
    seg_path = tmp_path / "other.seg.dcm"
    S.build_seg(S.headers_in_volume_order(other_headers, other_volume), other_labels, NAMES,
                S.AlgorithmInfo()).save_as(seg_path)
    instance = ct_instance(files, headers, volume)
    module = importer()
    module.setup(ctx := context(case, [seg_series(seg_path)]))
    with pytest.raises(SkipInstance, match="no DICOM SEG references it"):
        module.run(instance, ctx)


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd"])
def test_label_file_by_template_with_mapping(case, suffix: str) -> None:
    _, files, headers, volume, labels = case
    raw = np.zeros(labels.shape, np.int16)
    raw[labels == 2], raw[labels == 4], raw[labels == 9] = 1, 3, 7
    write_label_file(case, raw, f"{headers[0].SeriesInstanceUID}{suffix}")
    instance = ct_instance(files, headers, volume)
    module = importer(path_template="{input_dir}/labels/{SeriesInstanceUID}" + suffix,
                      label_map={1: "LAD", "3": "rca", 7: "ignore"})
    module.setup(ctx := context(case, []))
    module.run(instance, ctx)
    assert instance.labels.names == {2: "LAD", 4: "RCA"}
    assert instance.labels.source == f"file:labels/{headers[0].SeriesInstanceUID}{suffix}"
    assert int((instance.labels.array == 2).sum()) == 40 and int((instance.labels.array == 4).sum()) == 9
    assert int((instance.labels.array != 0).sum()) == 49  # label 7 ignored


def test_label_file_without_mapping_is_all_cac_and_unmapped_values_fail(case) -> None:
    _, files, headers, volume, labels = case
    write_label_file(case, labels, "any.nii.gz")
    instance = ct_instance(files, headers, volume)
    module = importer(path_template="{input_dir}/labels/*.nii.gz")
    module.setup(ctx := context(case, []))
    module.run(instance, ctx)
    assert instance.labels.names == {5: "CAC"} and int(instance.labels.array.sum()) == 5 * int((labels > 0).sum())
    strict = importer(path_template="{input_dir}/labels/*.nii.gz", label_map={2: "LAD"})
    strict.setup(ctx)
    with pytest.raises(ValueError, match=r"\[4, 9\] are not in label_map"):
        strict.run(instance, ctx)


def test_label_file_on_another_grid_is_an_error(case) -> None:
    _, files, headers, volume, labels = case
    shifted = replace(volume, origin_lps=(-19.5, -20.0, -50.0))
    write_label_file(case, labels, "shifted.nii.gz", volume=shifted)
    write_label_file(case, labels[:-1], "short.nrrd", volume=replace(volume, hu=volume.hu[:-1]))
    instance = ct_instance(files, headers, volume)
    for name, message in (("shifted.nii.gz", "origin"), ("short.nrrd", "size")):
        module = importer(source="file", path_template="{input_dir}/labels/" + name)
        module.setup(ctx := context(case, []))
        with pytest.raises(S.GeometryMismatch, match=message):
            module.run(instance, ctx)


def test_missing_segmentation_skips_or_fails(case) -> None:
    _, files, headers, volume, _ = case
    instance = ct_instance(files, headers, volume)
    module = importer(path_template="{input_dir}/labels/{PatientID}.nii.gz")
    module.setup(ctx := context(case, []))
    with pytest.raises(SkipInstance, match="no file matches path_template"):
        module.run(instance, ctx)
    failing = importer(path_template="{input_dir}/labels/{PatientID}.nii.gz", missing="fail")
    failing.setup(ctx)
    with pytest.raises(FileNotFoundError):
        failing.run(instance, ctx)


def test_bad_options_are_config_errors(case) -> None:
    ctx = context(case, [])
    with pytest.raises(ChainError, match="unknown field"):
        importer(path_template="{input_dir}/{Nope}.nii.gz").setup(ctx)
    with pytest.raises(ChainError, match="not one of"):
        importer(label_map={1: "aorta"}).setup(ctx)
    with pytest.raises(ChainError, match="needs a path_template"):
        importer(source="file").setup(ctx)


# --------------------------------------------------------------------------- whole workflow


def _run(input_dir: Path, output_dir: Path, *overrides: str) -> int:
    cli = pytest.importorskip("cac_mhub.cli")
    extra = [x for o in overrides for x in ("--set", o)]
    return cli.main(["run", "--input", str(input_dir), "--output", str(output_dir), "--workflow", "rescore",
                     "--quiet", *extra])


@pytest.mark.parametrize("engine", ["highdicom", "dcmqi"])
def test_rescore_workflow_from_seg_writes_seg_sr_and_the_analytic_score(case, engine: str) -> None:
    root, files, headers, _, _ = case
    write_seg(case)
    for f in files:
        shutil.copy(f, root / "in" / f.name)
    out = root / "out"
    assert _run(root / "in", out, f"modules.DsegConverter.engine={engine}") == 0
    folder = out / str(headers[0].SeriesInstanceUID)
    report = json.loads((folder / "report.json").read_text())
    assert report["status"] in ("ok", "scored"), report.get("reason")
    assert report["scores"]["agatston"] == pytest.approx(sum(EXPECTED.values()))
    assert report["outputs"]["seg"].endswith("cac.seg.dcm") and report["outputs"]["sr"].endswith("cac.sr.dcm")
    # the SEG written by the chain re-imports to the same label map, and the SR has the same numbers
    seg = pydicom.dcmread(folder / "cac.seg.dcm")
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == headers[0].SeriesInstanceUID
    back = R.read_sr(pydicom.dcmread(folder / "cac.sr.dcm"))
    assert back["agatston"] == pytest.approx(report["scores"]["agatston"])
    assert back["per_artery"]["LAD"]["agatston"] == pytest.approx(EXPECTED["LAD"])
    assert set(back["segments"]) == {"LAD", "RCA", "CAC"}


def test_rescore_workflow_from_label_files_and_a_mismatched_one(case, tmp_path: Path) -> None:
    root, files, headers, volume, labels = case
    (root / "in").mkdir(exist_ok=True)
    for f in files:
        shutil.copy(f, root / "in" / f.name)
    raw = np.zeros(labels.shape, np.uint8)
    raw[labels == 2], raw[labels == 4], raw[labels == 9] = 1, 2, 3
    write_label_file(case, raw, f"{headers[0].SeriesInstanceUID}.nii.gz")
    # a second series (another study) whose label file is on a shifted grid
    other_files, other_headers, other_volume, other_labels = make_case(tmp_path / "second")
    (root / "in" / "second").mkdir()
    for f in other_files:
        shutil.copy(f, root / "in" / "second" / f.name)
    shifted = replace(other_volume, origin_lps=(-20.0, -20.0, -47.5))
    write_label_file(case, other_labels, f"{other_headers[0].SeriesInstanceUID}.nii.gz", volume=shifted)
    out = root / "out"
    assert _run(root / "in", out, "modules.SegmentationImporter.label_map={1: LAD, 2: RCA, 3: CAC}") == 0
    good = json.loads((out / str(headers[0].SeriesInstanceUID) / "report.json").read_text())
    assert good["scores"]["agatston"] == pytest.approx(sum(EXPECTED.values()))
    assert good["scores"]["per_artery"]["RCA"]["agatston"] == pytest.approx(EXPECTED["RCA"])
    bad = json.loads((out / str(other_headers[0].SeriesInstanceUID) / "report.json").read_text())
    assert bad["status"] == "failed" and "GeometryMismatch" in bad["reason"] and "origin" in bad["reason"]
    assert "scores" not in bad or bad["scores"] is None
    assert not (out / str(other_headers[0].SeriesInstanceUID) / "cac.seg.dcm").exists()
