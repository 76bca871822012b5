#!/usr/bin/env bash
# Creates (once) the peers environment for the tabular and audio benchmarks:
# IBM ART 1.20.1 beside the project, in bench/.venv-art (never in the project's .venv).
# Safe to call concurrently: a lock serialises creation.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=bench/.venv-art
exec 9>bench/.venv-art.lock
flock 9
if [ ! -f "$VENV/.installed" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q -c requirements/constraints.txt \
    adversarial-robustness-toolbox==1.20.1 packaging scikit-learn soundfile torchaudio==2.11.0
  # ART 1.20.1 imports `packaging` without declaring it; plugins install editable
  "$VENV/bin/pip" install -q -c requirements/constraints.txt -e . $(ls -d plugins/mmargin-* | sed 's/^/-e /')
  touch "$VENV/.installed"
fi
echo "$VENV"
