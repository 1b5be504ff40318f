# The two quick-start commands (`make demo`, `make test`) create the virtual environment in
# .venv on first use and reinstall it when pyproject.toml changes.
VENV ?= .venv
PYTHON ?= python3

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[test,load]'
	touch $@

.PHONY: install demo test lint
install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(VENV)/bin/hub demo

test: $(VENV)/.installed
	$(VENV)/bin/pytest $(PYTEST_ARGS)

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports

# Rewrite the single initial migration from the models (until the first release).
migration: $(VENV)/.installed
	$(VENV)/bin/python -m hub.migrations.regenerate
