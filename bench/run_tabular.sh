#!/usr/bin/env bash
# The tabular benchmark: mmargin vs IBM ART 1.20.1 on the synthetic fraud data.
# ART lives in its own environment (bench/.venv-art, created once by setup_art.sh); the
# tabular plugin is installed there editable. Results: bench/results/tabular.{json,md}.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=$(bash bench/setup_art.sh | tail -n 1)
if ! "$VENV/bin/python" -c "import mmargin_tabular, sys; sys.exit(0 if 'plugins/mmargin-tabular' in mmargin_tabular.__file__ else 1)" 2>/dev/null; then
  "$VENV/bin/pip" install -q -c requirements/constraints.txt -e plugins/mmargin-tabular
fi
OMP_NUM_THREADS=1 "$VENV/bin/python" bench/tabular_bench.py "$@"
