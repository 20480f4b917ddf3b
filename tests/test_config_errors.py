"""Bad configurations: one line on stderr, exit 2, and `validate` says exactly what `run` would."""

from __future__ import annotations

import time

import pytest

from cac_mhub.chain import ChainError
from cac_mhub.cli import main
from cac_mhub.config import load


def validate(*args: str) -> int:
    return main(["validate", *args])


def run(tmp_path, *args: str) -> int:
    (tmp_path / "in").mkdir(exist_ok=True)
    return main(["run", "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"), "--quiet", *args])


def one_error_line(capsys) -> str:
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert "Traceback" not in captured.err and "\n" not in err, captured.err
    assert err.startswith("cac-mhub: "), err
    return err


@pytest.mark.parametrize("override, message", [
    ("general=5", "general: must be a mapping"),
    ("general.name=[1, 2]", "general.name: expected text"),
    ("modules.DicomImporter.min_slices=[", "value is not valid YAML"),
])
def test_bad_overrides_are_one_line_errors(override, message, tmp_path, capsys):
    assert validate("--workflow", "import", "--set", override) == 2
    assert message in one_error_line(capsys)
    assert run(tmp_path, "--workflow", "import", "--set", override) == 2
    assert message in one_error_line(capsys)


def test_override_into_an_empty_section(tmp_path, capsys):
    config = tmp_path / "c.yml"
    config.write_text("general:\nexecute: [DicomImporter, ReportExporter]\nmodules:\n")
    assert validate("--config", str(config), "--set", "modules.DicomImporter.min_slices=5",
                    "--set", "general.name=x") == 0
    assert "ok:" in capsys.readouterr().out


def _bad_configs(tmp_path):
    binary = tmp_path / "binary.yml"
    binary.write_bytes(bytes(range(256)) * 4)
    listing = tmp_path / "list.yml"
    listing.write_text("- DicomImporter\n- ReportExporter\n")
    folder = tmp_path / "folder.yml"
    folder.mkdir()
    keys = tmp_path / "keys.yml"
    keys.write_text("1: x\nexecute: [DicomImporter]\n")
    return {
        "binary": (binary, "is not a UTF-8 text file"),
        "list": (listing, "must be a mapping"),
        "folder": (folder, "cannot be read"),
        "missing": (tmp_path / "nope.yml", "config file not found"),
        "int keys": (keys, "unknown config section(s): 1"),
    }


@pytest.mark.parametrize("case", ["binary", "list", "folder", "missing", "int keys"])
def test_bad_config_files_are_one_line_errors(case, tmp_path, capsys):
    path, message = _bad_configs(tmp_path)[case]
    assert validate("--config", str(path)) == 2
    assert message in one_error_line(capsys)
    assert run(tmp_path, "--config", str(path)) == 2
    assert message in one_error_line(capsys)


@pytest.mark.parametrize("args, message", [
    (["--workflow", "import", "--set", "modules.DicomImporter.preferred_increment_mm=[1]"],
     "preferred_increment_mm: expected [low, high]"),
    (["--workflow", "import", "--set", "execute.0=NiftiConverter"], "the first module in execute must be a source"),
    (["--workflow", "default", "--set", "modules.NnunetCacRunner.model=no-such-model"], "model 'no-such-model' not found"),
    (["--workflow", "rescore", "--set", "modules.SegmentationImporter.path_template=x/{nope}.nii.gz"], "unknown field {nope}"),
])
def test_validate_runs_every_check_that_run_does(args, message, tmp_path, capsys):
    assert validate(*args) == 2
    assert message in one_error_line(capsys)
    assert run(tmp_path, *args) == 2
    assert message in one_error_line(capsys)
    assert not (tmp_path / "out" / "cohort.csv").exists()


@pytest.mark.parametrize("override", [
    "modules.DicomImporter.max_increment_mm=.nan",
    "modules.DicomImporter.max_normal_angle_deg=.inf",
    "modules.DicomImporter.max_increment_mm=-.inf",
    "modules.DicomImporter.preferred_increment_mm=[.nan, 3]",
])
def test_nan_and_infinity_are_rejected(override, capsys):
    assert validate("--workflow", "import", "--set", override) == 2
    assert "is not a finite number" in one_error_line(capsys)


def test_nan_rejected_in_options_that_may_be_null():
    with pytest.raises(ChainError, match="AgatstonCalculator.mass_calibration: nan is not a finite number"):
        load(workflow="rescore", overrides=["modules.AgatstonCalculator.mass_calibration=.nan"])


@pytest.mark.parametrize("name", ["../config/import", "", "import.yml", "/etc/passwd", "import/..", "a b"])
def test_workflow_names_are_names_not_paths(name, tmp_path, capsys):
    assert validate("--workflow", name) == 2
    assert "is not a name" in one_error_line(capsys)
    assert run(tmp_path, "--workflow", name) == 2
    assert "is not a name" in one_error_line(capsys)


@pytest.mark.parametrize("option, value", [
    ("NiftiConverter.nifti_name", "../../x.nii.gz"),
    ("NiftiConverter.nifti_name", "sub/ct.nii.gz"),
    ("ReportExporter.cohort_name", "../../x"),
    ("ReportExporter.report_name", "''"),
    ("ReportExporter.report_name", "."),
    ("ReportExporter.report_name", ".."),
    ("ReportExporter.report_name", ".hidden.json"),
    ("ReportExporter.report_name", "'a\\\\b.json'"),
    ("ReportExporter.report_name", '"r\\0.json"'),
    ("DsegConverter.name", "../seg"),
    ("SrExporter.name", "''"),
])
def test_output_file_names_stay_inside_the_output_folder(option, value, tmp_path, capsys):
    module, _, name = option.partition(".")
    override = f"modules.{option}={value}"
    assert validate("--workflow", "default", "--set", override) == 2
    err = one_error_line(capsys)
    assert f"{module}.{name}:" in err and "must be a plain file name" in err


def test_escaping_names_write_nothing_anywhere(tmp_path, make_ct, capsys):
    make_ct(tmp_path / "in" / "s")
    out = tmp_path / "deep" / "er" / "out"
    assert main(["run", "--input", str(tmp_path / "in"), "--output", str(out), "--workflow", "import", "--quiet",
                 "--set", "modules.NiftiConverter.write_nifti=true",
                 "--set", "modules.NiftiConverter.nifti_name=../../x.nii.gz"]) == 2
    assert "NiftiConverter.nifti_name" in one_error_line(capsys)
    assert list(tmp_path.rglob("x.nii.gz")) == [] and not out.exists()


def test_plain_names_are_still_fine(tmp_path, make_ct):
    make_ct(tmp_path / "in" / "s")
    out = tmp_path / "out"
    assert main(["run", "--input", str(tmp_path / "in"), "--output", str(out), "--workflow", "import", "--quiet",
                 "--set", "modules.NiftiConverter.write_nifti=true", "--set", "modules.NiftiConverter.nifti_name=v-1.nii.gz",
                 "--set", "modules.ReportExporter.report_name=r_1.json", "--set", "modules.ReportExporter.cohort_name=all"]) == 0
    assert len(list(out.glob("*/v-1.nii.gz"))) == 1 and len(list(out.glob("*/r_1.json"))) == 1
    assert (out / "all.csv").is_file() and (out / "all.json").is_file()


# --- bounded configs: size, nesting, alias expansion (issue 20, failure 6) ------------------------


def alias_bomb(levels: int, width: int = 9) -> str:
    """Nested anchors: each level lists the one below ``width`` times (width**levels values)."""
    lines = ["general: {name: bomb}", "execute: [DicomImporter, NiftiConverter, ReportExporter]",
             "x0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"x{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * width) + "]" for i in range(1, levels + 1)]
    lines.append(f"modules:\n  DicomImporter:\n    preferred_increment_mm: *a{levels}")
    return "\n".join(lines) + "\n"


def _bounded_cases(tmp_path):
    cases = {
        "alias bomb, 9 levels": (alias_bomb(9), "values once its aliases are expanded"),
        "alias bomb, 40 levels": (alias_bomb(40), "values once its aliases are expanded"),
        "deep flow nesting": ("execute: " + "[" * 30000 + "]" * 30000 + "\n", "nested deeper than"),
        "deep block nesting": ("modules:\n" + "".join(" " * i + "k:\n" for i in range(1, 200)), "nested deeper than"),
        "recursive alias": ("execute: &e [DicomImporter, *e]\n", ""),
        "oversized": ("general: {name: x}\n" + "# padding\n" * 8000, "larger than 64 KiB"),
    }
    paths = {}
    for name, (text, message) in cases.items():
        path = tmp_path / (name.replace(" ", "_").replace(",", "") + ".yml")
        path.write_text(text)
        paths[name] = (path, message)
    return paths


@pytest.mark.parametrize("case", ["alias bomb, 9 levels", "alias bomb, 40 levels", "deep flow nesting",
                                  "deep block nesting", "recursive alias", "oversized"])
def test_unbounded_configs_are_refused_at_once(case, tmp_path, capsys):
    """A YAML alias bomb (9 nested levels hung run and validate past 30 s) and other unbounded
    documents are one line and exit 2 before anything walks them. The time bound only catches a
    hang; the figure itself (well under a second) is the issue's, measured by hand."""
    path, message = _bounded_cases(tmp_path)[case]
    for command in (lambda: validate("--config", str(path)), lambda: run(tmp_path, "--config", str(path))):
        start = time.monotonic()
        assert command() == 2
        assert time.monotonic() - start < 10
        err = one_error_line(capsys)
        assert message in err and str(path) in err


def test_unbounded_override_values_are_refused(tmp_path, capsys):
    values = {
        "modules.DicomImporter.preferred_increment_mm=" + "[" * 5000 + "]" * 5000: "is longer than",
        "modules.DicomImporter.preferred_increment_mm=" + "[" * 100 + "]" * 100: "nested deeper than",
        "modules.DicomImporter.preferred_increment_mm=[*nope, 3]": "is not valid YAML",
        "modules." + ".".join(["x"] * 3000) + "=1": "is longer than",
        "modules." + ".".join(["x"] * 40) + "=1": "key nested deeper than",
    }
    nested = "&a0 [1, 2, 3, 4, 5, 6, 7, 8, 9]"
    for level in range(1, 8):
        nested = f"[{nested}, &a{level} [" + ", ".join([f"*a{level - 1}"] * 9) + "]]"
    values["modules.DicomImporter.preferred_increment_mm=" + nested] = "values once its aliases are expanded"
    for override, message in values.items():
        for command in (lambda: validate("--workflow", "import", "--set", override),
                        lambda: run(tmp_path, "--workflow", "import", "--set", override)):
            start = time.monotonic()
            assert command() == 2
            assert time.monotonic() - start < 10
            err = one_error_line(capsys)
            assert message in err and len(err) < 400, err


def test_configs_within_the_bounds_still_load(tmp_path):
    """Aliases and anchors are fine while the expanded document is small."""
    config = tmp_path / "anchors.yml"
    config.write_text("general: {name: a}\nexecute: [DicomImporter, ReportExporter]\n"
                      "modules:\n  DicomImporter: &opts {min_slices: 5, preferred_increment_mm: &inc [2, 3]}\n"
                      "  ReportExporter: {}\n")
    resolved = load(config=config)
    assert resolved["execute"][0]["options"]["preferred_increment_mm"] == [2.0, 3.0]
    assert validate("--config", str(config)) == 0
