# geomail: `make run` (install and serve conf/dev.yaml), `make test` (the whole test suite).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEV_CERT := var/tls/cert.pem

# Every install step takes exact versions from constraints.txt (all the venv's packages, pip and
# the build backend included), so CI and `make binary` build the same thing twice.
CONSTRAINTS := constraints.txt
PIP_INSTALL = $(BIN)/pip install -q -c $(CONSTRAINTS) --build-constraint $(CONSTRAINTS)

.PHONY: run test test-fast lint binary bench clean lock fuzz

run: $(VENV)/.installed $(DEV_CERT)
	$(BIN)/geomail serve -c conf/dev.yaml

# Everything: unit and integration tests on the venv, then the end-to-end tests again against
# the one-file binary that `make binary` builds.
test: lint binary
	$(BIN)/pytest -q -p no:cacheprovider tests
	GEOMAIL_BIN=$(CURDIR)/dist/geomail $(BIN)/pytest -q -p no:cacheprovider -m binary tests/e2e

test-fast: $(VENV)/.installed-dev
	$(BIN)/pytest -q -p no:cacheprovider tests/unit

# The Hypothesis fuzz tests (tests/fuzz/) long and random: 20,000 examples each (FUZZ_EXAMPLES=N
# to change; about 20 min on 2 cores), a failure kept in .hypothesis/ and replayed first next time.
# `make test` runs them short and derandomized.
fuzz: $(VENV)/.installed-dev
	HYPOTHESIS_PROFILE=long $(BIN)/pytest -q -p no:cacheprovider --timeout 0 tests/fuzz

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check geomail tests bench
	$(BIN)/lint-imports
	$(BIN)/mypy

binary: dist/geomail

dist/geomail: $(VENV)/.installed-build build.spec $(shell find geomail -name '*.py')
	$(BIN)/pyinstaller --noconfirm --clean --log-level WARN build.spec

# geomail side by side with smtp-sink, Postfix, aiosmtpd and Dovecot (bench/README.md): as root,
# ~12 min; BENCH_ARGS="--quick --reps 1 --reps-cheap 1 --lat-reps 1" for a smoke run.
bench: $(VENV)/.installed-dev
	PYTHON=$(abspath $(BIN))/python GEOMAIL_CMD=$${GEOMAIL_CMD:-$(abspath $(BIN))/geomail} \
		bench/peers.sh $(BENCH_ARGS)

$(VENV)/.created:
	$(PYTHON) -m venv $(VENV)
	touch $@

$(VENV)/.installed: $(VENV)/.created pyproject.toml $(CONSTRAINTS)
	$(BIN)/pip install -q -c $(CONSTRAINTS) --upgrade pip setuptools wheel
	$(PIP_INSTALL) -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(PIP_INSTALL) -e '.[dev]'
	touch $@

$(VENV)/.installed-build: $(VENV)/.installed
	$(PIP_INSTALL) -e '.[build]'
	touch $@

# Rewrite constraints.txt from the venv: after a dependency was added to pyproject.toml (and
# installed), or after `$(BIN)/pip install -U -e '.[dev,build]'` to move to newer releases.
lock: $(VENV)/.installed-dev $(VENV)/.installed-build
	$(BIN)/pip install -q 'setuptools>=68' wheel  # pyproject.toml's build-system, locked too
	$(BIN)/pip install -q -e '.[dev,build]'
	{ echo "# Exact versions of every package in the venv; \`make lock\` rewrites this file."; \
	  $(BIN)/pip freeze --all --exclude-editable | grep -v -i '^geomail[=@ ]' \
	    | LC_ALL=C sort -f; } > $(CONSTRAINTS).new
	mv $(CONSTRAINTS).new $(CONSTRAINTS)

$(DEV_CERT):
	mkdir -p var/tls
	openssl req -x509 -newkey rsa:2048 -nodes -days 825 -subj "/CN=localhost" \
		-addext "subjectAltName=DNS:localhost,DNS:mail.example.test,IP:127.0.0.1" \
		-keyout var/tls/key.pem -out $@ 2>/dev/null
	chmod 600 var/tls/key.pem

clean:
	rm -rf build dist var bench/run bench/tools/fsyncbench bench/tools/tcprtt bench/tools/smtplat
