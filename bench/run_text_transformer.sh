#!/usr/bin/env bash
# The MR word-substitution benchmark on a transformer: mmargin's discrete search vs
# TextAttack's GreedyWordSwapWIR and a TextFooler-like attack, against the MiniLM MR
# classifier (built on first use), same candidates and constraints for every method.
# Arguments replace the defaults, e.g.  bash bench/run_text_transformer.sh --samples 20 --out /tmp/t.json
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
if [[ $# -eq 0 ]]; then
    set -- --samples 200 --budget 500 --out bench/results/text_transformer.json
fi
export OMP_NUM_THREADS=1
exec "$PY" bench/text_transformer_bench.py "$@"
