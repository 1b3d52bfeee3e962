.PHONY: install style quality test

PYTHON ?= python
check_dirs := src tests training examples benchmarks experiments

# CPU build of torch from this machine's disk first, then the package with its test and dev extras.
install:
	$(PYTHON) -m pip install torch==2.13.0
	$(PYTHON) -m pip install -e ".[dev]"

style:
	ruff check $(check_dirs) --fix
	ruff format $(check_dirs)

quality:
	ruff check $(check_dirs)
	ruff format --check $(check_dirs)

test:
	HF_HUB_OFFLINE=1 $(PYTHON) -m pytest tests
