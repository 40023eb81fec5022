#!/usr/bin/env bash
# Install everything into ./.venv (created if missing) and run the test suite.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -k anchors -x`.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".[test,onnx]"
exec .venv/bin/python -m pytest "$@"
