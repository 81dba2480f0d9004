# Two entry points, each doing all set-up on a fresh machine:
#   make run   - set up, then run the whole pipeline (Prefect flow) with defaults
#   make test  - set up (plus test-only system packages), then run the test suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

export PREFECT_SERVER_ANALYTICS_ENABLED := false
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS := 120
export DO_NOT_TRACK := 1

# Debian packages: TeX Live for the compile rule, poppler for PDF/SVG tools; Chromium for page tests.
SYSTEM_PKGS := texlive-latex-base texlive-latex-recommended texlive-fonts-recommended poppler-utils
TEST_PKGS   := chromium

.PHONY: setup setup-test system system-test run test bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# torch first: 2.13.0 is the CPU build on this machine's disk; the project's range accepts it.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

system:
	@missing=""; \
	command -v pdflatex  >/dev/null || missing="$(SYSTEM_PKGS)"; \
	command -v pdftocairo >/dev/null || missing="$(SYSTEM_PKGS)"; \
	kpsewhich mathtools.sty >/dev/null 2>&1 || missing="$(SYSTEM_PKGS)"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" != 0 ]; then echo "need root to apt-get install: $$missing (run: sudo make $(MAKECMDGOALS))" >&2; exit 1; fi; \
	  echo "installing system packages: $$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi

system-test: system
	@if ! command -v chromium >/dev/null; then \
	  if [ "$$(id -u)" != 0 ]; then echo "need root to apt-get install $(TEST_PKGS)" >&2; exit 1; fi; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(TEST_PKGS); \
	fi

setup: system $(STAMP)

setup-test: system-test $(STAMP)

run: setup
	$(BIN)/topiceq run

test: setup-test
	$(BIN)/python -m pytest -q -ra

bench: setup
	for b in bench/*_bench.py; do $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
