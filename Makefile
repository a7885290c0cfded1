# ptsd-cds — everything runs from a project-local virtual environment (.venv).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: install run run-sandbox-auth test bench spec-coverage check-config check-reference evaluate clean fuzz soak

install: $(STAMP)

# Runtime dependencies at the versions pinned in constraints.txt (the image uses the same pins).
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test]'
	touch $(STAMP)

## Run the service on http://127.0.0.1:8080 with development defaults (auth off unless PTSD_CDS_AUTH is set).
run: $(STAMP)
	$(BIN)/ptsd-cds serve --dev

## Same, but verifying client JWTs and trusting the CDS Hooks sandbox (development only).
run-sandbox-auth: $(STAMP)
	PTSD_CDS_AUTH=required $(BIN)/ptsd-cds serve --dev

## Run the test suite.
test: $(STAMP)
	$(BIN)/python -m pytest -q

## Longer hypothesis fuzzing of hook and feedback requests (the suite runs 150 examples per property).
fuzz: $(STAMP)
	FUZZ_EXAMPLES=$${FUZZ_EXAMPLES:-3000} FUZZ_RANDOM=1 $(BIN)/python -m pytest -q -p no:cacheprovider tests/test_fuzz.py

## Soak: every hook, bad requests and feedback at a steady rate with 50 slow clients (SOAK_SECONDS=120).
soak: $(STAMP)
	$(BIN)/python scripts/soak.py --seconds $${SOAK_SECONDS:-120}

## Load benchmark under production settings vs a parse-only baseline, with the issue #7 targets
## (prints figures; never part of `make test`). Options: make bench BENCH_ARGS="--quick --only history".
bench: $(STAMP)
	$(BIN)/python -m scripts.bench $(BENCH_ARGS)

spec-coverage: $(STAMP)
	$(BIN)/python scripts/spec_coverage.py

## Compare reference/ (the in-repo copies of reference data) with the shared folder: make check-reference SHARED=../shared
SHARED ?= ../shared
check-reference:
	$(PYTHON) scripts/check_reference.py --shared $(SHARED)

check-config: $(STAMP)
	$(BIN)/ptsd-cds check-config

## Print the cards for a hook request without a server: make evaluate REQUEST=fixtures/requests/x.json
evaluate: $(STAMP)
	$(BIN)/ptsd-cds evaluate $(REQUEST)

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
