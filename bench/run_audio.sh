#!/usr/bin/env bash
# Audio benchmark: mmargin vs IBM ART 1.20.1 PGD (minimal by bisection on eps) vs random
# white noise, on the committed synthetic spoken digits, at equal pass budgets.
# Writes bench/results/audio.json and bench/results/audio.md. Arguments go to
# bench/audio_bench.py (e.g. --samples 30 --norms l2 for a quick look).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=$(bash bench/setup_art.sh | tail -1)
# ART 1.20.1 imports `packaging` without declaring it; the audio plugin must be the live
# (editable) source, not a copy made when the shared environment was created.
"$VENV/bin/python" -c "import packaging" 2>/dev/null \
  || "$VENV/bin/pip" install -q -c requirements/constraints.txt packaging
"$VENV/bin/python" - <<'PY' || "$VENV/bin/pip" install -q --no-deps -e plugins/mmargin-audio
import pathlib, sys, mmargin_audio
sys.exit(0 if pathlib.Path(mmargin_audio.__file__).resolve().is_relative_to(pathlib.Path("plugins").resolve()) else 1)
PY
OMP_NUM_THREADS=1 "$VENV/bin/python" bench/audio_bench.py "$@"
