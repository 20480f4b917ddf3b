"""DsegConverter and SrExporter as chain modules: outputs, naming, empty masks, resampled volumes."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pydicom
import pytest

from cac_mhub.chain import Context, Instance
from cac_mhub.dicom import sr as R
from cac_mhub.modules.dseg_converter import DsegConverter
from cac_mhub.modules.sr_exporter import SrExporter
from cac_mhub.scoring.agatston import score
from cac_mhub.types import Labels, Series
from tests.test_seg import EXPECTED, NAMES, SPACING, make_case


def module(cls, **options):
    return cls(**{**{k: o.default for k, o in cls.options.items()}, **options})


@pytest.fixture
def instance_and_ctx(tmp_path: Path):
    files, headers, volume, labels = make_case(tmp_path)
    order = list(range(len(files)))[::-1]  # file order differs from z order
    series = Series(uid=str(headers[0].SeriesInstanceUID), study_uid=str(headers[0].StudyInstanceUID),
                    files=[files[i] for i in order], headers=[headers[i] for i in order], modality="CT")
    instance = Instance(key="series-1", series=series, volume=volume,
                        labels=Labels(labels, dict(NAMES), source="model:test@1"))
    instance.scores = score(volume.hu, SPACING, labels, NAMES)
    ctx = Context(input_dir=tmp_path, output_dir=tmp_path / "out", config={})
    return instance, ctx


@pytest.mark.parametrize("engine", ["highdicom", "dcmqi"])
def test_seg_and_sr_outputs_named_like_mhub(instance_and_ctx, engine: str) -> None:
    instance, ctx = instance_and_ctx
    module(DsegConverter, engine=engine, name="calcium", series_number=1234).run(instance, ctx)
    module(SrExporter, name="calcium").run(instance, ctx)
    assert instance.outputs == {"seg": "series-1/calcium.seg.dcm", "sr": "series-1/calcium.sr.dcm"}
    seg = pydicom.dcmread(ctx.output_dir / instance.outputs["seg"], stop_before_pixels=True)
    assert int(seg.SeriesNumber) == 1234
    assert instance.report["seg"]["segments"] == {1: "LAD", 2: "RCA", 3: "CAC"}
    assert instance.report["seg"]["engine"] == engine and instance.report["sr"]["references_seg"]
    back = R.read_sr(pydicom.dcmread(ctx.output_dir / instance.outputs["sr"]))
    assert back["agatston"] == pytest.approx(sum(EXPECTED.values()))
    assert back["segments"]["LAD"] == (str(seg.SOPInstanceUID), 1)
    assert not [p for p in (ctx.output_dir / "series-1").iterdir() if p.name.startswith(".")]  # no temp files


def test_model_id_from_labels_source(instance_and_ctx) -> None:
    instance, ctx = instance_and_ctx
    module(DsegConverter).run(instance, ctx)
    seg = pydicom.dcmread(ctx.output_dir / instance.outputs["seg"], stop_before_pixels=True)
    assert "model:test@1" in seg.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0].AlgorithmParameters


def test_empty_mask_skip_writes_no_seg_but_an_sr(instance_and_ctx) -> None:
    instance, ctx = instance_and_ctx
    empty = np.zeros_like(instance.labels.array)
    instance.labels = replace(instance.labels, array=empty)
    instance.scores = score(instance.volume.hu, SPACING, empty, NAMES)
    module(DsegConverter, engine="dcmqi").run(instance, ctx)
    assert "seg" not in instance.outputs
    assert instance.report["seg"] == {"written": False, "reason": "no calcium voxels in the label map (empty: skip)"}
    assert instance.warnings == []  # a zero score is a result, not a problem
    module(SrExporter).run(instance, ctx)
    back = R.read_sr(pydicom.dcmread(ctx.output_dir / instance.outputs["sr"]))
    assert back["agatston"] == 0.0 and back["segments"] == {}


def test_empty_mask_write_gives_an_empty_segment_with_either_engine(instance_and_ctx) -> None:
    instance, ctx = instance_and_ctx
    instance.labels = replace(instance.labels, array=np.zeros_like(instance.labels.array))
    module(DsegConverter, engine="dcmqi", empty="write").run(instance, ctx)
    seg = pydicom.dcmread(ctx.output_dir / instance.outputs["seg"])
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["CAC"] and not seg.pixel_array.any()
    assert instance.report["seg"]["engine"] == "highdicom"  # dcmqi cannot encode an empty segmentation


def test_resampled_volume_gets_no_seg_and_a_warning(instance_and_ctx) -> None:
    instance, ctx = instance_and_ctx
    instance.volume = replace(instance.volume, resampled=True)
    module(DsegConverter).run(instance, ctx)
    assert "seg" not in instance.outputs and instance.report["seg"]["written"] is False
    assert any("no DICOM SEG written" in w and "resampled" in w for w in instance.warnings)
    module(SrExporter).run(instance, ctx)  # the SR still references the source images
    sr = pydicom.dcmread(ctx.output_dir / instance.outputs["sr"])
    referenced = {i.ReferencedSOPInstanceUID for s in sr.CurrentRequestedProcedureEvidenceSequence
                  for r in s.ReferencedSeriesSequence for i in r.ReferencedSOPSequence}
    assert referenced == {str(h.SOPInstanceUID) for h in instance.series.headers}


def test_missing_inputs_fail_with_a_reason(instance_and_ctx) -> None:
    instance, ctx = instance_and_ctx
    instance.labels = None
    with pytest.raises(ValueError, match="needs a volume and labels"):
        module(DsegConverter).run(instance, ctx)
    instance.scores = None
    with pytest.raises(ValueError, match="needs scores"):
        module(SrExporter).run(instance, ctx)
