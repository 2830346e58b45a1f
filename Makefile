# Each target creates .venv on first use and reinstalls only when pyproject.toml or constraints.txt change.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: demo test install clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q torch==2.13.0
	$(VENV)/bin/pip install -q -c constraints.txt -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

# Two runs of 32 sevens with one novelty memory, the same two runs plain, judged against earlier runs.
demo: $(STAMP)
	$(VENV)/bin/python -m noveltynets.bench.demo --out out/demo
	@echo "picture: out/demo/demo.png  (numbers and commands: out/demo/demo.json)"

test: $(STAMP)
	$(VENV)/bin/python -m pytest -q

clean:
	rm -rf $(VENV) out .pytest_cache
