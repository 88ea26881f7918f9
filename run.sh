#!/usr/bin/env bash
# Bootstrap for a fresh clone: creates .venv with the pinned stack, then runs one job.
#   bash run.sh demo   - the main job on the embedded tiny default model
#   bash run.sh test   - the whole test suite (what .ci/run runs)
#   bash run.sh app    - the standalone app on 127.0.0.1
#   bash run.sh bench  - the benchmarks in bench/
set -euo pipefail
cd "$(dirname "$0")"
job="${1:-demo}"; shift || true
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 GRADIO_ANALYTICS_ENABLED=False

stamp=.venv/.installed-$(sha256sum requirements-test.txt | cut -c1-16)
if [ ! -f "$stamp" ]; then
  python3 -m venv .venv
  .venv/bin/python -m pip install -q --disable-pip-version-check -r requirements-test.txt
  .venv/bin/python -m pip install -q --disable-pip-version-check --no-deps stable-diffusion-sdkit==2.1.5
  touch "$stamp"
fi
PY=.venv/bin/python

case "$job" in
  demo)  exec "$PY" -m lora_ext demo "$@" ;;
  app)   exec "$PY" -m lora_ext app "$@" ;;
  bench) exec "$PY" -m bench "$@" ;;
  test)
    if [ ! -x /usr/bin/chromium ]; then
      (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) || echo "run.sh: could not install chromium; browser tests will fail" >&2
    fi
    exec "$PY" -m pytest -n 2 -q -p no:cacheprovider tests "$@" ;;
  *) echo "run.sh: unknown job '$job' (demo, app, test, bench)" >&2; exit 2 ;;
esac
