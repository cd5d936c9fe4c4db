# pip users: `make demo` and `make test` create .venv, install dmlkit (editable) and run.
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test install lint bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(PY) pyproject.toml
	$(PY) -m pip install --upgrade pip setuptools wheel
	$(PY) -m pip install -e ".[test,notebooks]"
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (dmlkit)"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m dmlkit demo
	$(PY) -m dmlkit notebooks

test: $(STAMP)
	$(PY) -m pytest -q --doctest-modules dmlkit tests

lint: $(STAMP)
	$(PY) -m ruff check dmlkit tests benchmarks notebooks

bench: $(STAMP)
	$(PY) benchmarks/losses.py
	$(PY) benchmarks/evaluate.py
	$(PY) benchmarks/train.py
	$(PY) benchmarks/adversarial.py

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
