#!/usr/bin/env bash
# Install everything into ./.venv (created if missing), then run the main job end to end on
# the built-in synthetic shapes dataset: make data, train from scratch for a few minutes,
# evaluate on the held-out split, and draw the detections on images (about 7 minutes of
# training on 2 CPU cores).
# Everything is written to ./demo_output (override with DEMO_DIR=...; EPOCHS=... for a longer run).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
OUT=${DEMO_DIR:-demo_output}
EPOCHS=${EPOCHS:-12}
BACKBONE=mobilenet128_0.25
SIZE=128
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e .
BIN=.venv/bin
DATA="$OUT/data"
SNAPSHOT="$OUT/snapshots/${BACKBONE}_csv_$(printf %02d "$EPOCHS").keras"

echo "== 1/4 synthetic shapes dataset -> $DATA"
$BIN/python -m keras_retinanet.utils.synthetic "$DATA" --train 1024 --val 64 --size $SIZE --min-box 32 --max-box 64

echo "== 2/4 retinanet-train, from scratch, $EPOCHS epochs -> $OUT/snapshots"
# a 64-channel FPN and heads (the paper's 256 is ~8x slower on a CPU), a short LR warmup
$BIN/retinanet-train --no-weights --backbone $BACKBONE --feature-size 64 --batch-size 8 \
    --lr 1e-3 --warmup-steps 64 --epochs "$EPOCHS" --steps 64 \
    --image-min-side $SIZE --image-max-side $SIZE \
    --snapshot-path "$OUT/snapshots" --tensorboard-dir "$OUT/logs" --seed 0 \
    csv "$DATA/train.csv" "$DATA/classes.csv" --val-annotations "$DATA/val.csv"

# No --backbone, --config, --classes or size flags from here on: the snapshot carries its recipe.
echo "== 3/4 retinanet-evaluate on the held-out split -> $OUT/evaluation"
$BIN/retinanet-evaluate --metric all \
    --save-path "$OUT/evaluation" --json "$OUT/evaluation/figures.json" \
    csv "$DATA/val.csv" "$DATA/classes.csv" "$SNAPSHOT"

echo "== 4/4 retinanet-predict: detections drawn on images -> $OUT/predictions"
$BIN/retinanet-predict --score-threshold 0.3 \
    --output-dir "$OUT/predictions" --csv "$OUT/predictions/detections.csv" \
    "$SNAPSHOT" "$DATA/images/val_*.png"

echo "done: see $OUT/evaluation (ground truth + detections, PR curves) and $OUT/predictions"
