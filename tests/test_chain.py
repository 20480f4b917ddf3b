"""Chain core: per-instance isolation and what an instance keeps once it is finished."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cac_mhub.chain import Context, Instance, Module, SkipInstance, run_chain
from cac_mhub.types import Series, Volume


def series(uid: str, selected: bool, n: int = 3) -> Series:
    return Series(uid=uid, study_uid="s", files=[Path(f"{uid}{i}") for i in range(n)],
                  headers=[{"i": i} for i in range(n)], selected=selected)


class Source(Module):
    source = True

    def __init__(self, catalog: list[Series]) -> None:
        super().__init__()
        self.catalog = catalog

    def create_instances(self, ctx: Context) -> list[Instance]:
        ctx.shared["catalog"] = self.catalog
        return [Instance(key=s.uid, series=s, status="ok" if s.selected else "skipped") for s in self.catalog]


class Work(Module):
    def run(self, instance: Instance, ctx: Context) -> None:
        if instance.key == "bad":
            raise RuntimeError("boom\nsecond line")
        if instance.key == "skip":
            raise SkipInstance("not usable")
        instance.volume = Volume(hu=np.zeros((1, 1, 1)), spacing_zyx=(1, 1, 1), origin_lps=(0, 0, 0))


class Report(Module):
    always_run = True

    def run(self, instance: Instance, ctx: Context) -> None:
        instance.report["seen"] = True


def test_errors_are_isolated_and_reports_still_run(tmp_path):
    catalog = [series("bad", True), series("skip", True), series("good", True)]
    instances = run_chain([Source(catalog), Work(), Report()], Context(tmp_path, tmp_path, {}))
    by_key = {i.key: i for i in instances}
    assert by_key["bad"].status == "failed" and by_key["bad"].reason == "Work: RuntimeError: boom"
    assert by_key["skip"].status == "skipped" and by_key["skip"].reason == "Work: not usable"
    assert by_key["good"].status == "ok"
    assert all(i.report.get("seen") for i in instances)
    assert all(i.volume is None for i in instances)  # arrays released after each instance


def test_finished_instances_keep_unselected_series_whole_in_the_catalog(tmp_path):
    seg, ct = series("seg", selected=False), series("ct", selected=True)
    ctx = Context(tmp_path, tmp_path, {})
    run_chain([Source([seg, ct]), Work(), Report()], ctx)
    assert len(seg.headers) == 3  # an input SEG stays readable for CT instances after it
    assert len(ct.headers) == 1  # a finished CT drops its per-slice headers
    assert ctx.shared["catalog"][0] is seg
