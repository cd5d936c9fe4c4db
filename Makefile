# pip users: `make demo` and `make test` create .venv, install dmlkit (editable) and run.
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo notebooks test install lint bench clean gpu-wheels docs mutation

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(PY) pyproject.toml
	$(PY) -m pip install --upgrade pip setuptools wheel
	$(PY) -m pip install -e ".[test,notebooks,docs]"
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (ipykernel)"
	touch $(STAMP)

install: $(STAMP)

# every notebook at its defaults into the ignored build/notebooks/ (the checkout stays clean)
demo: $(STAMP)
	$(PY) -m dmlkit demo
	$(PY) -m dmlkit notebooks

# developers: regenerate the committed notebooks/*.ipynb, figures/ and notebooks/results/
# from the notebooks/*.py sources (ONLY="03 09" for some of them)
notebooks: $(STAMP)
	$(PY) -m dmlkit.nbrun --in-place $(if $(ONLY),--only $(ONLY))

# in parallel, a test file per worker at a time (tests/conftest.py); PYTEST_WORKERS=0: serial
PYTEST_WORKERS ?= auto
test: $(STAMP)
	$(PY) -m pytest -q --doctest-modules -n $(PYTEST_WORKERS) --dist loadscope \
		--no-loadscope-reorder dmlkit tests

# the book (Sphinx): the README, docs/, the notebooks as committed, the API and the exercise
# solutions, offline, into the ignored build/docs/html/index.html (docs/development.md)
docs: $(STAMP)
	$(PY) docs/book/build.py

lint: $(STAMP)
	$(PY) -m ruff check dmlkit tests benchmarks notebooks

bench: $(STAMP)
	$(PY) benchmarks/losses.py
	$(PY) benchmarks/evaluate.py
	$(PY) benchmarks/train.py
	$(PY) benchmarks/adversarial.py

# mutation testing of the numeric core (not part of `make test`; docs/development.md has the
# scores): MODULES="similarity retrieval tiling ..." (benchmarks/mutation.py --list), into build/;
# MUTATION_ARGS="--time-limit 1800" stops each module there, "--resume" goes on
mutation: $(STAMP)
	$(PY) -c "import mutmut" 2>/dev/null || $(PY) -m pip install -e ".[mutation]"
	nice -n 15 $(PY) benchmarks/mutation.py $(MODULES) $(MUTATION_ARGS)

# the wheels the GPU check needs beyond a machine with torch & co. preinstalled
# (benchmarks/gpu-wheels.txt; docs/gpu.md: the offline run), into the ignored .whl/
GPU_PYTHON   ?= 3.12
GPU_PLATFORM ?= manylinux_2_28_x86_64 manylinux2014_x86_64
GPU_WHEELS   ?= .whl

gpu-wheels:
	$(PYTHON) -m pip download --no-deps --only-binary=:all: --python-version $(GPU_PYTHON) \
		--implementation cp $(foreach p,$(GPU_PLATFORM),--platform $(p)) \
		-d $(GPU_WHEELS) -r benchmarks/gpu-wheels.txt
	@du -ch $(GPU_WHEELS)/*.whl | tail -1

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
