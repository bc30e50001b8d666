#!/bin/sh
# model/ablations.sh: train and score the ablation rows of model/RESULTS.md.
# Every row: 400 steps of batch 32 x 128 tokens (about 1.6 M tokens), one
# thread, seed 1; scored by the ELBO (1 sample, seed 1234) on the first
# 100,000 characters of novels-valid.txt and of moby-eval.txt.
# Usage: sh model/ablations.sh TFLM OUTDIR [ROW...]   (rows: model/recipes/ablations/*.json)
set -e
TFLM=${1:?usage: ablations.sh TFLM OUTDIR [ROW...]}
OUT=${2:?usage: ablations.sh TFLM OUTDIR [ROW...]}
shift 2
HERE=$(cd "$(dirname "$0")" && pwd)
CORPUS=$HERE/corpus/out
mkdir -p "$OUT"
head -c 100000 "$CORPUS/novels-valid.txt" > "$OUT/valid100k.txt"
head -c 100000 "$CORPUS/moby-eval.txt" > "$OUT/moby100k.txt"
[ $# -gt 0 ] || set -- $(cd "$HERE/recipes/ablations" && ls *.json | sed 's/\.json$//')
export OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-SkylakeX}
for row in "$@"; do
    cfg=$HERE/recipes/ablations/$row.json
    if [ ! -f "$OUT/$row.safetensors" ]; then
        if [ -f "$OUT/$row.safetensors.ckpt" ]; then
            "$TFLM" train --resume "$OUT/$row.safetensors.ckpt" --data "$CORPUS/novels-train.txt" \
                --valid "$CORPUS/novels-valid.txt" -o "$OUT/$row.safetensors" --threads 1 -q
        else
            "$TFLM" train --config "$cfg" --data "$CORPUS/novels-train.txt" \
                --valid "$CORPUS/novels-valid.txt" -o "$OUT/$row.safetensors" --threads 1 -q
        fi
    fi
    "$TFLM" score -m "$OUT/$row.safetensors" --json "$OUT/valid100k.txt" > "$OUT/$row.valid.json"
    "$TFLM" score -m "$OUT/$row.safetensors" --json "$OUT/moby100k.txt" > "$OUT/$row.moby.json"
    "$TFLM" layers --profile --json -m "$OUT/$row.safetensors" -p "It is a truth universally" \
        -n 120 --seed 1 --text "$OUT/valid100k.txt" > "$OUT/$row.profile.json" 2>/dev/null || true
    echo "$row done"
done
