# Two commands that work on a fresh machine (Python >= 3.10 and internet access to PyPI):
#   make quickstart   trains a small EfficientNet on the built-in digits dataset (a few minutes on 2 CPU cores)
#   make test         runs the test suite
VENV ?= .venv
PYTHON = $(VENV)/bin/python
WORKDIR ?= /tmp/effnet_jax_quickstart

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PYTHON) -m pip install --upgrade pip
	$(PYTHON) -m pip install -e '.[test]'
	touch $@

install: $(VENV)/.installed

quickstart: install
	$(PYTHON) -m effnet_jax.main --config configs/quickstart.py --workdir $(WORKDIR)

test: install
	$(PYTHON) -m pytest -n 2 -q

.PHONY: install quickstart test
