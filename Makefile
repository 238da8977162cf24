# geomail: `make run` (install and serve conf/dev.yaml), `make test` (the whole test suite).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEV_CERT := var/tls/cert.pem

.PHONY: run test test-fast lint binary bench clean

run: $(VENV)/.installed $(DEV_CERT)
	$(BIN)/geomail serve -c conf/dev.yaml

# Everything: unit and integration tests on the venv, then the end-to-end tests again against
# the one-file binary that `make binary` builds.
test: lint binary
	$(BIN)/pytest -q -p no:cacheprovider tests
	GEOMAIL_BIN=$(CURDIR)/dist/geomail $(BIN)/pytest -q -p no:cacheprovider -m binary tests/e2e

test-fast: $(VENV)/.installed-dev
	$(BIN)/pytest -q -p no:cacheprovider tests/unit

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
	$(BIN)/pip install -q --upgrade pip
	touch $@

$(VENV)/.installed: $(VENV)/.created pyproject.toml
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

$(VENV)/.installed-build: $(VENV)/.installed
	$(BIN)/pip install -q -e '.[build]'
	touch $@

$(DEV_CERT):
	mkdir -p var/tls
	openssl req -x509 -newkey rsa:2048 -nodes -days 825 -subj "/CN=localhost" \
		-addext "subjectAltName=DNS:localhost,DNS:mail.example.test,IP:127.0.0.1" \
		-keyout var/tls/key.pem -out $@ 2>/dev/null
	chmod 600 var/tls/key.pem

clean:
	rm -rf build dist var bench/run bench/tools/fsyncbench bench/tools/tcprtt bench/tools/smtplat
