"""Benchmark: N studies round trip through a local Orthanc (DICOMweb, then DIMSE C-GET and C-MOVE):
seconds per study for pull (query + metadata + selection + retrieve), score (``cac-mhub run`` on
the retrieved series) and push (store SEG + SR + confirm), against scoring the same studies from
a local folder (``cac-mhub run`` per study folder, warm). Transfer overhead = pull + push, the
work the PACS adds, relative to the local score (the score step itself is the same run on the
same files; its difference is noise of a shared machine, shown apart).

    .venv/bin/python benchmarks/bench_pacs.py [--studies 3] [--size 256] [--workflow default]

Needs the Debian packages orthanc and orthanc-dicomweb (the server runs on 127.0.0.1 with free
ports and a temporary storage folder, like the tests). Not a test: figures only.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # tests/orthanc.py: the same local Orthanc as the tests

from pydicom.uid import generate_uid  # noqa: E402

from cac_mhub.cli import main  # noqa: E402
from cac_mhub.config import load  # noqa: E402
from cac_mhub.dicom.synth import CtSeriesSpec, write_ct_series  # noqa: E402
from cac_mhub.pacs.base import StudyQuery  # noqa: E402
from cac_mhub.pacs.command import connect  # noqa: E402
from cac_mhub.pacs.config import check_section, settings  # noqa: E402
from cac_mhub.pacs.roundtrip import RoundTrip  # noqa: E402
from cac_mhub.pacs.selection import rules_from_config  # noqa: E402
from tests.orthanc import Orthanc  # noqa: E402


def write_studies(root: Path, count: int, size: int) -> list[tuple[str, Path]]:
    from cac_mhub.phantom.thorax import generate_thorax

    studies = []
    for index in range(count):
        phantom = generate_thorax(4250 + index, size=size, increment=3.0, z_extent_mm=200.0, burden="severe")
        uid = generate_uid()
        folder = root / f"study{index}"
        write_ct_series(phantom.hu, folder, phantom.spacing_zyx, phantom.origin_lps,
                        CtSeriesSpec(patient_id=f"BENCH-{index}", study_uid=uid, slice_thickness=phantom.slice_thickness))
        studies.append((uid, folder))
    return studies


def local(studies: list[tuple[str, Path]], out: Path, workflow: str) -> list[float]:
    seconds = []
    for index, (_, folder) in enumerate(studies):
        start = time.perf_counter()
        code = main(["run", "--input", str(folder), "--output", str(out / f"study{index}"), "--workflow", workflow, "--quiet"])
        seconds.append(time.perf_counter() - start)
        assert code == 0, f"local run exit {code}"
    return seconds


def round_trip(server: Orthanc, via: str, retrieve: str, uids: list[str], out: Path, workflow: str) -> dict[str, list[float]]:
    pacs_settings = settings(check_section(server.pacs_config(retrieve=retrieve)))
    pacs = connect(pacs_settings, via)
    rules = rules_from_config(load(workflow=workflow))
    trip = RoundTrip(pacs, pacs_settings, out, rules, ["--workflow", workflow])
    start = time.perf_counter()
    found = pacs.find_studies(StudyQuery(study_uids=tuple(uids)))
    query = (time.perf_counter() - start) / len(uids)
    outcomes = trip.run(found)
    pacs.close()
    assert all(o.state == "done" and o.pushed == 2 for o in outcomes), [(o.state, o.error) for o in outcomes]
    return {stage: [o.timings[stage] + (query if stage == "pull" else 0.0) for o in outcomes]
            for stage in ("pull", "score", "push")}


def main_bench() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=3)
    parser.add_argument("--size", type=int, default=256, help="in-plane matrix of the phantoms")
    parser.add_argument("--workflow", default="default")
    args = parser.parse_args()
    import os

    with tempfile.TemporaryDirectory(prefix="bench-pacs-") as tmp:
        root = Path(tmp)
        studies = write_studies(root / "data", args.studies, args.size)
        files = [p for _, folder in studies for p in sorted(folder.glob("*.dcm"))]
        megabytes = sum(p.stat().st_size for p in files) / 1e6 / len(studies)
        main(["run", "--input", str(studies[0][1]), "--output", str(root / "warm"), "--workflow", args.workflow, "--quiet"])
        baseline = local(studies, root / "local", args.workflow)
        server = Orthanc(root / "orthanc").start()
        os.environ["CAC_TEST_PACS_PASSWORD"] = server.password
        try:
            server.upload(files)
            uids = [uid for uid, _ in studies]
            results = {}
            for name, via, retrieve in (("DICOMweb", "dicomweb", "c-get"), ("DIMSE C-GET", "dimse", "c-get"),
                                        ("DIMSE C-MOVE", "dimse", "c-move")):
                # each protocol its own output folder and ledger; the SEG/SR of earlier ones stay in the study
                results[name] = round_trip(server, via, retrieve, uids, root / name.replace(" ", "_"), args.workflow)
        finally:
            server.stop()
    mean = statistics.mean
    print(f"{args.studies} studies, {args.size}x{args.size}x{len(files) // len(studies)} CT, "
          f"{megabytes:.1f} MB per study, workflow {args.workflow}, Orthanc on 127.0.0.1")
    print(f"local folder: score {mean(baseline):.2f} s/study")
    print("| protocol | pull s/study | score s/study | push s/study | total s/study | transfer overhead (pull + push) vs local score |")
    print("|---|---|---|---|---|---|")
    for name, stages in results.items():
        pull, score, push = (mean(stages[s]) for s in ("pull", "score", "push"))
        total = pull + score + push
        print(f"| {name} | {pull:.2f} | {score:.2f} | {push:.2f} | {total:.2f} | "
              f"+{pull + push:.2f} s ({100 * (pull + push) / mean(baseline):.1f} %) |")


if __name__ == "__main__":
    main_bench()
