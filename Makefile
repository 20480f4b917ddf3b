# Two commands do everything on a fresh machine:
#   make run INPUT=<dicom folder> OUTPUT=<folder>   # the main job, default workflow
#   make test                                        # the test suite
# Both create the virtual environment (.venv) on first use.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INPUT ?= /app/data/input_data
OUTPUT ?= /app/data/output_data
WORKFLOW ?= default
ARGS ?=

.PHONY: venv run test bench clean readme train

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.lock requirements-test.txt docker/requirements-tooling.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	# pip/setuptools/wheel/argparse are pinned apart: `pip freeze` never lists them
	$(BIN)/pip install --quiet -r docker/requirements-tooling.txt
	$(BIN)/pip install --quiet -r requirements.lock
	# test-only (torchio 0.19.1 for the DeepCAC2 parity test); --no-deps: never another torch
	$(BIN)/pip install --quiet --no-deps -r requirements-test.txt
	$(BIN)/pip install --quiet --no-deps -e .
	touch $@

run: venv
	$(BIN)/cac-mhub run --input "$(INPUT)" --output "$(OUTPUT)" --workflow $(WORKFLOW) $(ARGS)

test: venv
	$(BIN)/python -m pytest -q $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis

# Rewrite the README's configuration reference from the modules' declared options.
readme: venv
	$(BIN)/python -c "import re,pathlib; from cac_mhub.cli import options_reference as o; p=pathlib.Path('README.md'); t=p.read_text(); p.write_text(re.sub(r'(<!-- options:begin -->\n).*?(<!-- options:end -->)', lambda m: m.group(1)+o()+'\n'+m.group(2), t, flags=re.S))"

# Train the default CAC model on synthetic phantoms and export it to models/cac-phantom-2d
# (CPU: about an hour on 2 cores; nnU-Net work folders go to /tmp/cac_train). See docs/model.md.
.PHONY: train
train: venv
	$(BIN)/python -m cac_mhub.training --work /tmp/cac_train --models models $(ARGS)
