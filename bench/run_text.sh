#!/usr/bin/env bash
# The MR word-substitution benchmark: mmargin's discrete search vs TextAttack's greedy WIR
# over the same candidates. Runs in the project's venv (mmargin-text depends on textattack).
# Arguments replace the defaults, e.g.  bash bench/run_text.sh --samples 50 --out /tmp/t.json
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
if [[ $# -eq 0 ]]; then
    set -- --samples 250 --budget 1000 --out bench/results/text.json
fi
export OMP_NUM_THREADS=1
exec "$PY" bench/text_bench.py "$@"
