#!/usr/bin/env bash
# `make bench-scale`: the MNIST task in one process vs on 2 Ray workers (wall ratio, Ray
# start-up, identical results) and, with a CUDA GPU, CPU vs GPU samples/s at batch sizes
# 1..1024. Needs Ray (`pip install -e '.[ray]'`; `make setup` installs it for the tests).
# Arguments replace the defaults, e.g. bash bench/run_scale.sh --samples 32 --out /tmp/scale
set -euo pipefail

cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
exec "$PY" bench/scale_bench.py "$@"
