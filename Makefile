# Each target creates .venv on first use and reinstalls only when pyproject.toml or constraints.txt change.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: demo test install browser clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q torch==2.13.0
	$(VENV)/bin/pip install -q -c constraints.txt -e '.[test,ray]'
	touch $(STAMP)

install: $(STAMP)

# Two runs of 32 sevens with one novelty memory, the same two runs plain, judged against earlier runs.
demo: $(STAMP)
	$(VENV)/bin/python -m noveltynets.bench.demo --out out/demo
	@echo "picture: out/demo/demo.png  (numbers and commands: out/demo/demo.json)"

# The web page's browser test drives Debian's Chromium (Playwright with executable_path): installed here where apt can.
browser:
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || \
	  (command -v apt-get >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null 2>&1) || \
	  (command -v apt-get >/dev/null && apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null 2>&1) || \
	  echo "Chromium could not be installed (apt-get chromium): the web page's browser test will be skipped"

test: $(STAMP) browser
	$(VENV)/bin/python -m pytest -q

clean:
	rm -rf $(VENV) out .pytest_cache
