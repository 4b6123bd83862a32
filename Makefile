# Two commands on a fresh machine:
#   make demo    set up .venv/ (Python + npm packages) and run `mobilize demo`
#   make test    set up .venv/ and run the test suite
# Everything installs into .venv/ at the repo root.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.mobilize-installed
NODE   := $(VENV)/node

.PHONY: setup demo test test-fast constraints clean chromium

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt js/package.json js/package-lock.json
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check "setuptools<81" wheel
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[all,test]"
	mkdir -p $(NODE)
	cp js/package.json js/package-lock.json $(NODE)/
	cd $(NODE) && npm ci --no-audit --no-fund --loglevel=error
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/mobilize demo

# browser latency checks run in Debian's chromium (apt, as root); without it those tests skip
chromium:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	{ if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	  else echo "note: chromium is not installed; browser latency tests will be skipped"; fi; }

test: $(STAMP) chromium
	$(BIN)/python -m pytest

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow"

constraints:
	$(BIN)/python -m pip freeze --exclude-editable | grep -v '^mobilize' > constraints.body
	(echo "# Every package mobilize[all,test] pulls in, pinned to versions that install and import together"; \
	 echo "# (regenerate with: make constraints). See DEVELOPERS.md for the known conflicts."; \
	 cat constraints.body) > constraints.txt && rm constraints.body

clean:
	rm -rf $(VENV) mobilize-demo .pytest_cache
