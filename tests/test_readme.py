"""The README's configuration reference is the one the code declares."""

from __future__ import annotations

import re
from pathlib import Path

from cac_mhub.cli import options_reference

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_option_reference_matches_code():
    text = README.read_text(encoding="utf-8")
    block = re.search(r"<!-- options:begin -->\n(.*?)<!-- options:end -->", text, re.S)
    assert block, "README lacks the options block"
    assert block.group(1).strip() == options_reference().strip(), "run `make readme` to refresh it"


def test_readme_names_the_two_commands():
    text = README.read_text(encoding="utf-8")
    assert "make run INPUT=" in text and "make test" in text
