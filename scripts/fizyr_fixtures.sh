#!/usr/bin/env bash
# Make the fizyr 1.0 fixtures (real fizyr .h5 models and the outputs fizyr computes for fixed
# inputs) with fizyr/keras-retinanet 1.0.0 itself, in its own virtual environment (.venv-fizyr:
# TensorFlow 2.15 with Keras 2, keras-resnet 0.2), into tests/fixtures/fizyr (or $1).
# Nothing is made when the folder is complete already. See scripts/make_fizyr_fixtures.py.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
OUT=${1:-tests/fixtures/fizyr}
if [ -f "$OUT/manifest.json" ]; then
    echo "fizyr fixtures: $OUT"
    exit 0
fi
PYTHON=${PYTHON:-python3}
VENV="$ROOT/.venv-fizyr"
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet "tensorflow-cpu==2.15.1" "numpy<2" cython "opencv-python-headless<4.11" \
    pillow progressbar2 h5py
"$VENV/bin/python" -m pip install --quiet --no-deps keras-resnet==0.2.0
"$VENV/bin/python" -m pip install --quiet --no-build-isolation --no-deps keras-retinanet==1.0.0
rm -rf "$OUT.partial"
# run from elsewhere, so that fizyr's installed keras_retinanet is imported, never this repository's
(cd / && TF_CPP_MIN_LOG_LEVEL=2 "$VENV/bin/python" "$ROOT/scripts/make_fizyr_fixtures.py" "$ROOT/$OUT.partial")
rm -rf "$OUT"
mv "$OUT.partial" "$OUT"
echo "fizyr fixtures: $OUT"
