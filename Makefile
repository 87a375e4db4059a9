# ghost-ablate: the README's two set-up commands are `make install` and `make test`.
PYTHON  ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
CLI     := $(BIN)/ghost-ablate

# sweep / report knobs (empty PROFILE: the experiment file's own profile)
EXPERIMENT ?= experiments/cifar10_ablation.yaml
PROFILE    ?=
SEEDS      ?= 0
DATA_DIR   ?= data/cifar10
SHARD      ?= 0/1
RESULTS    ?= results
REPORTS    ?= reports

.PHONY: install test count

install: $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	$(BIN)/python -c "import torch, torchvision.ops, lightning, fvcore; print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'lightning', lightning.__version__)"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

test:
	$(BIN)/python -m pytest -q

count:
	$(CLI) count
