#!/usr/bin/env bash
# `make bench-certified`: certified radius (CROWN, interval) against the found margin on
# MNIST for the shipped CNN and a small MLP, L-inf and L2. Needs no peers: it runs in the
# project's environment. Arguments replace the defaults, e.g.
#   bash bench/run_certified.sh --samples 20 --out /tmp/bench/certified.json
set -euo pipefail

cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
if [[ $# -eq 0 ]]; then
    set -- --samples 100 --budget 500 --norms linf l2 --out bench/results/certified.json
fi
export OMP_NUM_THREADS=1
exec "$PY" bench/certified_bench.py "$@"
