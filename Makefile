PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: demo test bench lint clean report-check

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	rm -f $(VENV)/.installed-* && touch $@

## The main job: the saliency-based detection study on the bundled MNIST subset, with its report.
demo: $(STAMP)
	$(BIN)/advsal run detection --name demo

## The test suite.
test: $(STAMP)
	$(BIN)/python -m pytest -q tests

## Benchmarks against peer libraries (installs them first).
bench: $(STAMP)
	$(BIN)/python -m pip install -q -e '.[dev,bench]'
	$(BIN)/python -m pip install -q --no-deps torchattacks
	$(BIN)/python benchmarks/train.py
	$(BIN)/python benchmarks/attacks.py
	$(BIN)/python benchmarks/saliency.py
	$(BIN)/python benchmarks/detection.py
	$(BIN)/python benchmarks/guard.py
	$(BIN)/python -m pytest -q tests/test_guard.py   # the ART adapter test runs where ART is installed

## Each study's report.html (tiny runs) in headless Chromium at 800 px: fails on overflow, broken images or
## console errors; screenshots in runs/report-check/screenshots/. Needs Debian's chromium (apt-get install chromium).
report-check: $(STAMP)
	$(BIN)/python tools/report_check.py --out runs/report-check

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) runs build *.egg-info
