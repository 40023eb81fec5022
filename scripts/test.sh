#!/usr/bin/env bash
# Install everything into ./.venv (created if missing), make the fizyr fixtures
# (scripts/fizyr_fixtures.sh, once) and run the test suite.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -k anchors -x`.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".[test,onnx]"
# real fizyr 1.0 .h5 models to load (made by fizyr itself, in its own venv; kept between runs)
bash scripts/fizyr_fixtures.sh
export KERAS_RETINANET_REQUIRE_FIZYR_FIXTURES=1
exec .venv/bin/python -m pytest "$@"
