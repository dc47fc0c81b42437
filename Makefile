# `make demo` and `make test` each set everything up on a fresh machine: a .venv with torch 2.13.0
# (CPU build) and this package, and Fashion-MNIST (Debian's dataset-fashion-mnist when root with apt).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
FMNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
DEMO := runs/demo

.PHONY: demo test bench data clean-venv

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

data:
	@if [ ! -e $(FMNIST) ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing Debian's dataset-fashion-mnist"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null; \
	  else \
	    echo "Fashion-MNIST is not installed system-wide: the loader will download it to ~/.cache/vqvae"; \
	  fi; \
	fi

test: $(STAMP) data
	$(PY) -m pytest -q

demo: $(STAMP) data
	$(VENV)/bin/vqvae train --out $(DEMO)/vqvae --overwrite
	$(VENV)/bin/vqvae evaluate $(DEMO)/vqvae --split test --json
	$(VENV)/bin/vqvae encode $(DEMO)/vqvae --out $(DEMO)/codes.npz --overwrite
	$(VENV)/bin/vqvae decode $(DEMO)/vqvae $(DEMO)/codes.npz --n 64 --out $(DEMO)/decoded_test_codes.png --overwrite
	@echo "demo outputs: $(DEMO)/vqvae (checkpoint, metrics.csv, eval.json, reconstructions.png, tb/),"
	@echo "              $(DEMO)/codes.npz, $(DEMO)/decoded_test_codes.png"

bench: $(STAMP)
	$(PY) -m pip install --quiet -e '.[test,bench]'
	$(PY) benchmarks/quantizer_speed.py
