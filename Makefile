# ghost-ablate: the README's two set-up commands are `make install` and `make test`.
PYTHON  ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
CLI     := $(BIN)/ghost-ablate
# more pytest options for `make test`, e.g. PYTEST_ARGS="-x -k NAME"
PYTEST_ARGS ?=

# sweep / report knobs (empty PROFILE: the experiment file's own profile)
EXPERIMENT ?= experiments/cifar10_ablation.yaml
PROFILE    ?=
SEEDS      ?= 0
DATA_DIR   ?= data/cifar10
SHARD      ?= 0/1
RESULTS    ?= results
REPORTS    ?= reports
# The committed demo's records live apart from your runs (results/runs is never committed).
DEMO_RESULTS ?= results/demo
# `make report PROFILE=subset` reports the committed demo (subset is its profile); any other
# profile, or RESULTS=... given, reports $(RESULTS).
REPORT_RESULTS = $(if $(and $(filter subset,$(PROFILE)),$(filter file,$(origin RESULTS))),$(DEMO_RESULTS),$(RESULTS))

.PHONY: install test count sweep-cifar sweep-cross sweep-imagenet dry-run-imagenet dry-run report bench bench-input demo precision-check pilot evidence evidence-report gpu-check demo-data pilot-options

# The demo's torch/torchvision pair (experiments/torch-stack.txt): seeds added later train on the same stack.
STACK ?= experiments/torch-stack.txt
install: $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]' $(if $(STACK),-c $(STACK))
	$(BIN)/python -c "import torch, torchvision.ops, lightning, fvcore; print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'lightning', lightning.__version__)"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

test:
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

count:
	$(CLI) count

SWEEP_ARGS = --seeds $(SEEDS) --data-dir $(DATA_DIR) --shard $(SHARD) --results-dir $(RESULTS) \
	$(if $(PROFILE),--profile $(PROFILE))

# The paper's CIFAR-10 grid (Tables 1-3 + GhostNet). Resumable: run it again after a crash.
sweep-cifar:
	$(CLI) sweep $(EXPERIMENT) $(SWEEP_ARGS)

# s in 2..5 x d in 1,3,5,7 for Ghost-VGG-16 and Ghost-ResNet-56, plus baselines.
sweep-cross:
	$(CLI) sweep experiments/cifar10_cross.yaml $(SWEEP_ARGS)

dry-run:
	$(CLI) sweep $(EXPERIMENT) $(SWEEP_ARGS) --dry-run

# The ImageNet tables (7, then 4, each under its own recipe) from ILSVRC-2012 in DATA_DIR
# (train/<wnid>/, val/<wnid>/). On a GPU node: DEVICES=8; across nodes, run it under srun
# with NODES=N (see README). PROFILE=imagenet_smoke checks the path in seconds.
IMAGENET_EXPERIMENTS ?= experiments/imagenet.yaml experiments/imagenet_resnet50.yaml
DEVICES ?= 1
NODES   ?= 1
LOGGER  ?= csv
IMAGENET_ARGS = --seeds $(SEEDS) --data-dir $(DATA_DIR) --shard $(SHARD) --results-dir $(RESULTS) \
	--devices $(DEVICES) --nodes $(NODES) --logger $(LOGGER) $(if $(PROFILE),--profile $(PROFILE)) \
	$(if $(NO_ESTIMATE),--no-estimate)
sweep-imagenet:
	@for e in $(IMAGENET_EXPERIMENTS); do $(CLI) sweep $$e $(IMAGENET_ARGS) --yes || exit $$?; done

# GPU-hours of the ImageNet plan: calibrated on this device, or STEP_TIME=seconds per step.
dry-run-imagenet:
	@for e in $(IMAGENET_EXPERIMENTS); do $(CLI) sweep $$e $(IMAGENET_ARGS) --dry-run \
	  $(if $(STEP_TIME),--step-time $(STEP_TIME)) || exit $$?; done

# Tables (CSV + markdown) and plots from results/ into reports/.
# The evidence section's test images come from DATA_DIR when it holds the runs' data.
report:
	$(CLI) report --results-dir $(REPORT_RESULTS) --out $(REPORTS) $(if $(PROFILE),--profile $(PROFILE)) \
	  $(if $(filter $(DEMO_RESULTS),$(REPORT_RESULTS)),$(if $(filter reports,$(REPORTS)),--readme README.md)) \
	  $(if $(wildcard $(DATA_DIR)),--data-dir $(DATA_DIR)) $(if $(DATA),--data $(DATA))

# The demo's 5,085-image subset of CIFAR-10 (the first 1,017 images of each official batch file), cut from
# CIFAR10_DIR (downloaded there if absent) and checked against the committed records' checksums.
CIFAR10_DIR ?= data/cifar10
demo-data:
	$(CLI) demo-data --from $(CIFAR10_DIR) --out $(DEMO_DATA)

# The paper grid on the real 5,085-image CIFAR-10 subset, 2 seeds, then seeds 2 and 3 of
# Table 2's rows, Table 3's ResNet rows and the pruned rows (experiments/cifar10_more_seeds.yaml),
# then the report: 8-9 hours on a 2-core CPU. Seed 0 of every row first, so an interrupted demo still
# fills every table; run it again to resume. Needs the subset in DEMO_DATA (`make demo-data`).
DEMO_DATA  ?= data/cifar10-subset
DEMO_SEEDS ?= 0 0,1
DEMO_MORE_SEEDS ?= 2 2,3
demo:
	@for seeds in $(DEMO_SEEDS); do \
	  $(CLI) sweep $(EXPERIMENT) --profile subset --seeds $$seeds --data-dir $(DEMO_DATA) \
	    --results-dir $(DEMO_RESULTS) --no-download || exit $$?; \
	done
	@for seeds in $(DEMO_MORE_SEEDS); do \
	  $(CLI) sweep experiments/cifar10_more_seeds.yaml --seeds $$seeds --data-dir $(DEMO_DATA) \
	    --results-dir $(DEMO_RESULTS) --no-download || exit $$?; \
	done
	$(CLI) report --results-dir $(DEMO_RESULTS) --out $(REPORTS) --profile subset --data-dir $(DEMO_DATA)

# The GPU path in one command (issue 41): environment, bench, CIFAR training in fp32/auto/compile, DDP,
# the ImageNet readers against each other, GhostNet from shards, memory calibration, loader descriptors;
# writes reports/gpu-check.md. Without CUDA it says so and runs the parts that need none.
gpu-check:
	$(CLI) gpu-check

# Latency, throughput, training speed and memory of every paper row (CPU unless DEVICE=cuda).
DEVICE ?= cpu
bench:
	$(CLI) bench --device $(DEVICE) --out $(RESULTS)/bench.csv

# The ImageNet readers per CPU core against torchvision's ImageFolder + PIL, on 400 generated
# photograph-like JPEGs of ImageNet's size (the README's input-pipeline table).
INPUT_BENCH ?= /tmp/ghost-ablate-natural
bench-input:
	rm -rf $(INPUT_BENCH) $(INPUT_BENCH).val_ground_truth.txt
	$(CLI) imagenet sample $(INPUT_BENCH) --natural --classes 4 --per-class 100 --val-per-class 1
	$(CLI) imagenet sort-val $(INPUT_BENCH)/val --ground-truth $(INPUT_BENCH).val_ground_truth.txt
	$(CLI) imagenet throughput $(INPUT_BENCH) --images 320 --repeats 5

# fp32 against bf16 on this CPU, paired by seed (issue 21): each seed in both precisions before the
# next seed, so an interrupted check still has complete pairs; run it again to resume.
PRECISION_SEEDS   ?= 0 1 2 3 4
PRECISION_RESULTS ?= results/precision
precision-check:
	@for seed in $(PRECISION_SEEDS); do for p in 32 bf16; do \
	  $(CLI) sweep experiments/precision_check.yaml --precision $$p --epochs 10 --seeds $$seed \
	    --data-dir $(DEMO_DATA) --results-dir $(PRECISION_RESULTS) --no-download || exit $$?; \
	done; done
	$(CLI) report --section precision --results-dir $(PRECISION_RESULTS) --out $(REPORTS)

# Convergence pilot (issue 39): Table 2's pair under the fast subset recipe at 8, 16 and 32 epochs,
# two seeds each, shortest first, so an interrupted pilot still has complete pairs; run it again to
# resume. The report chooses the length by comparing lengths, per model (reports/pilot.md), and names
# the length a model still needs; to train one model of the pair, run the sweep with --shard 0/2
# (VGG-16) or --shard 1/2 (Ghost-VGG-16), e.g. `$(CLI) sweep $(PILOT_EXPERIMENT) --epochs 512 --seeds 0
# --shard 1/2 --data-dir $(DEMO_DATA) --results-dir $(PILOT_RESULTS) --no-download`. The first pilot (the
# subset recipe at 12 and 30 epochs) is PILOT_EXPERIMENT=experiments/cifar10_pilot.yaml
# PILOT_RUNS="12:0 30:0 12:1 30:1 12:2 30:2". `sweep --seeds auto --pilot` reads the folder.
PILOT_RESULTS    ?= results/pilot
PILOT_EXPERIMENT ?= experiments/cifar10_convergence.yaml
PILOT_RUNS       ?= 8:0 8:1 16:0 16:1 32:0 32:1
pilot:
	@for r in $(PILOT_RUNS); do \
	  $(CLI) sweep $(PILOT_EXPERIMENT) --epochs $${r%%:*} --seeds $${r##*:} --data-dir $(DEMO_DATA) \
	    --results-dir $(PILOT_RESULTS) --no-download || exit $$?; \
	done
	$(CLI) report --section pilot --results-dir $(PILOT_RESULTS) --out $(REPORTS)

# Recipe options (issue 39): the pilot's recipe with one change each (a '+' joins the fields of one
# change), Table 2's pair at PILOT_OPTION_RUNS (length:seed, the declared recipe's own runs of that
# length being the reference), after the machine's matrix-product peak; each option's runs get new
# run ids. The pilot report's "Recipe options" table compares them within one machine (reports/pilot.md),
# so the references must be on the machine that trains the options: 16:0 16:1 are on an AMD EPYC
# (family 25 model 17); elsewhere train the declared recipe at other seeds first (`make pilot
# PILOT_RUNS="16:2 16:3"`) and pass them here (PILOT_OPTION_RUNS="16:2 16:3").
# EMA's decay suits the option's length: 16 epochs of the subset at batch 128 are 640 steps, after which
# a decay of 0.999 still holds 0.999^640 = 53% of the initial weights (its runs scored chance, 9-10%), and
# 0.99 holds 0.2%.
PILOT_OPTIONS    ?= label_smoothing=0 tta_flip=false warmup_epochs=0 nesterov=false ema_decay=0.99 precision=32 \
                    batch_size=256+lr_reference_batch=128
PILOT_OPTION_RUNS ?= 16:0 16:1
pilot-options:
	$(CLI) bench --peak --out $(PILOT_RESULTS)/peak.csv
	@for o in $(PILOT_OPTIONS); do for r in $(PILOT_OPTION_RUNS); do \
	  $(CLI) sweep $(PILOT_EXPERIMENT) --epochs $${r%%:*} --seeds $${r##*:} $$(echo "$$o" | tr '+' ' ' | \
	    sed 's/\([^ ]*\)/--set recipe.\1/g') --data-dir $(DEMO_DATA) --results-dir $(PILOT_RESULTS) --no-download \
	    || exit $$?; \
	done; done
	$(CLI) report --section pilot --results-dir $(PILOT_RESULTS) --out $(REPORTS)

# The evidence for Table 2 (issue 39): the fast subset recipe at the length the convergence pilot chose
# (EVIDENCE_EPOCHS), seed by seed; each seed is a block of the rows still open, trained on one machine
# kind, and the sequential design (experiments/cifar10_evidence_fast.yaml) stops a row once it is decided
# and plans no seed past its cap. Run it again to resume; the report (reports/evidence/) is written from
# whatever has finished. The first evidence (the subset recipe at 30 epochs, n=9 from `plan-seeds`) is
# EVIDENCE_EXPERIMENT=experiments/cifar10_evidence.yaml EVIDENCE_PROFILE=subset EVIDENCE_EPOCHS=30.
EVIDENCE_RESULTS    ?= results/evidence
EVIDENCE_EXPERIMENT ?= experiments/cifar10_evidence_fast.yaml
EVIDENCE_PROFILE    ?= subset_fast
EVIDENCE_EPOCHS     ?= 16
EVIDENCE_SEEDS      ?= 0 1 2 3 4 5 6 7 8 9
evidence:
	@for seed in $(EVIDENCE_SEEDS); do \
	  $(CLI) sweep $(EVIDENCE_EXPERIMENT) --epochs $(EVIDENCE_EPOCHS) --seeds $$seed --data-dir $(DEMO_DATA) \
	    --results-dir $(EVIDENCE_RESULTS) --no-download --yes || exit $$?; \
	done
	$(MAKE) evidence-report

evidence-report:
	$(CLI) report --results-dir $(EVIDENCE_RESULTS) --out $(REPORTS)/evidence --profile $(EVIDENCE_PROFILE) \
	  --epochs $(EVIDENCE_EPOCHS) --data-dir $(DEMO_DATA) --no-evidence --tables table2_ratio \
	  $(if $(filter reports,$(REPORTS)),--readme README.md --readme-block evidence)
