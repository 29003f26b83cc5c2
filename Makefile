# The two commands of the README: `make run` and `make test`. Both set up everything they need
# (virtualenv, pinned packages, default data, front-end assets) and are idempotent: a second run
# reuses .venv, the downloaded package files and the built tables, and starts in seconds.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
THREEDMOL_VERSION := 2.5.5
THREEDMOL := assets/vendor/3Dmol-min.js

.PHONY: run test screenshot venv dev-venv data assets browser lint clean-data

run: venv data assets
	$(BIN)/python -m explorer build --skip-reconstruction --skip-motifs || echo "maps not built (no checkpoint yet?): the app says what is missing"
	$(BIN)/python app.py

test: dev-venv data assets browser
	$(BIN)/python -m pytest

# The browser tests again, saving the README's screenshots in docs/ (a plain run writes them to build/).
screenshot: dev-venv data assets browser
	EXPLORER_UPDATE_SCREENSHOT=1 $(BIN)/python -m pytest tests/browser

venv: $(VENV)/.runtime-installed
dev-venv: $(VENV)/.dev-installed

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.runtime-installed: requirements.txt | $(VENV)/bin/python
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

$(VENV)/.dev-installed: requirements-dev.txt $(VENV)/.runtime-installed
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

# Known materials from pinned PyPI packages (and ../shared/data when present) -> data/tables/.
data: venv
	$(BIN)/python -m explorer data build

# 3Dmol.js from the npm registry, served by Dash from assets/ (never from a CDN).
assets: $(THREEDMOL)
$(THREEDMOL):
	mkdir -p assets/vendor data/cache/npm
	cd data/cache/npm && npm pack --silent 3dmol@$(THREEDMOL_VERSION) >/dev/null
	tar -xzf data/cache/npm/3dmol-$(THREEDMOL_VERSION).tgz -C data/cache/npm package/build/3Dmol-min.js
	cp data/cache/npm/package/build/3Dmol-min.js $@

# Debian's Chromium for the headless browser tests (Playwright drives it; its own download is blocked).
browser:
	@command -v chromium >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; \
	  else echo "chromium missing: run 'sudo apt-get install chromium chromium-driver' for the browser tests" >&2; fi; }

lint: dev-venv
	$(BIN)/ruff check .

clean-data:
	rm -rf data/tables data/cache data/user
