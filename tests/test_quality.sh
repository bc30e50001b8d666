#!/bin/sh
# tests/test_quality.sh: tflm quality (generative perplexity): usage errors,
# the --json shape, positive finite numbers, determinism for a seed, the
# decode defaults of flow and ar models, and --real. Prints one TAP line per
# check. Needs $TFLM_BIN (the built tflm); python3 checks the JSON (those
# checks are skipped without it). Exit 0 pass, 1 fail; a missing binary skips.

TFLM=${TFLM_BIN:-./tflm}
if [ ! -x "$TFLM" ]; then
    echo "1..0 # SKIP no tflm binary at $TFLM (set TFLM_BIN)"
    exit 0
fi
LC_ALL=C
LANG=C
NO_COLOR=1
export LC_ALL LANG NO_COLOR
unset TFLM_MODEL TFLM_THREADS

TMP=$(mktemp -d "${TMPDIR:-/tmp}/tflm-quality.XXXXXX") || exit 1
trap 'rm -rf "$TMP"' EXIT
trap 'exit 1' INT TERM

n=0
failed=0
ok() {      # ok CONDITION-EXIT-STATUS DESCRIPTION
    n=$((n + 1))
    if [ "$1" -eq 0 ]; then
        echo "ok $n - $2"
    else
        echo "not ok $n - $2"
        failed=$((failed + 1))
    fi
}
skip() {    # skip DESCRIPTION REASON
    n=$((n + 1))
    echo "ok $n - $1 # SKIP $2"
}
# rc EXPECTED DESCRIPTION COMMAND...: the command's exit status is EXPECTED
rc() {
    want=$1
    what=$2
    shift 2
    "$@" >"$TMP/out" 2>"$TMP/err"
    got=$?
    [ "$got" -eq "$want" ]
    ok $? "$what (exit $got, want $want)"
    [ "$got" -eq "$want" ] || sed 's/^/# /' "$TMP/err"
}
HAVE_PY=0
command -v python3 >/dev/null 2>&1 && HAVE_PY=1
# js FILE DESCRIPTION PYTHON: run PYTHON with j = the JSON of FILE; it must not raise
js() {
    if [ $HAVE_PY -eq 0 ]; then
        skip "$2" "no python3"
        return
    fi
    python3 -c 'import json, math, sys
j = json.load(open(sys.argv[1]))
exec(sys.argv[2])' "$1" "$3" >"$TMP/pyerr" 2>&1
    r=$?
    ok $r "$2"
    [ $r -eq 0 ] || sed 's/^/# /' "$TMP/pyerr"
}

# ---- two tiny models ------------------------------------------------------------
# a flow: V 97, d 4, T 16, D 16, H 2, flip block 4, three mix1 flows
cat >"$TMP/flow.json" <<'EOF'
{"format": "tflm", "version": 1, "vocab_size": 97, "latent_dim": 4, "patch": 1,
 "window": 16, "d_model": 16, "n_heads": 2, "flip_block": 4, "ln_eps": 1e-05,
 "flows": [{"type": "mix1", "layers": 1, "mixtures": 3, "direction": "l2r"},
           {"type": "mix1", "layers": 1, "mixtures": 3, "direction": "flip"},
           {"type": "mix1", "layers": 1, "mixtures": 2, "direction": "l2r"}]}
EOF
# the ar baseline, the judge
cat >"$TMP/ar.json" <<'EOF'
{"format": "tflm", "version": 1, "vocab_size": 97, "latent_dim": 4, "patch": 1,
 "window": 16, "d_model": 16, "n_heads": 2, "flip_block": 4, "ln_eps": 1e-05,
 "flows": [{"type": "ar", "layers": 1}]}
EOF
M="$TMP/flow.safetensors"
J="$TMP/ar.safetensors"
rc 0 "init a tiny flow" "$TFLM" init --config "$TMP/flow.json" -o "$M" --seed 1
rc 0 "init a tiny ar judge" "$TFLM" init --config "$TMP/ar.json" -o "$J" --seed 2

# ---- help and usage errors ---------------------------------------------------------
rc 0 "quality --help" "$TFLM" quality --help
grep -q '^Usage: tflm quality' "$TMP/out"
ok $? "quality --help prints its usage on stdout"
"$TFLM" --help 2>/dev/null | grep -q '^  quality '
ok $? "tflm --help lists quality"
rc 64 "quality without --judge" "$TFLM" quality -m "$M" -n 3 --chars 40
grep -q 'judge' "$TMP/err"
ok $? "missing judge: the message names --judge"
rc 64 "quality -n 0" "$TFLM" quality -m "$M" --judge "$J" -n 0
rc 64 "quality --chars x" "$TFLM" quality -m "$M" --judge "$J" --chars x
rc 64 "quality --decode bogus" "$TFLM" quality -m "$M" --judge "$J" --decode bogus
rc 64 "quality with a stray argument" "$TFLM" quality -m "$M" --judge "$J" stray
rc 66 "quality with a missing judge file" "$TFLM" quality -m "$M" --judge "$TMP/nonexistent.safetensors"
rc 66 "quality with a missing --real file" "$TFLM" quality -m "$M" --judge "$J" -n 1 --chars 8 \
    --real "$TMP/nonexistent.txt"

# ---- --json --------------------------------------------------------------------------
rc 0 "quality --json" "$TFLM" quality -m "$M" --judge "$J" -n 3 --chars 40 --json
cp "$TMP/out" "$TMP/q1.json"
js "$TMP/q1.json" "quality --json: keys and values" '
for k in ("model", "judge", "samples", "chars", "seed", "decode", "samples_bpc", "samples_ppl",
          "real_bpc", "real_ppl", "ms_per_sample"):
    assert k in j, k
assert j["model"].endswith("flow.safetensors") and j["judge"].endswith("ar.safetensors")
assert j["samples"] == 3 and j["chars"] == 40 and j["seed"] == 1
assert j["decode"] == "argmax", j["decode"]
assert j["real_bpc"] is None and j["real_ppl"] is None
assert 0 < j["samples_chars"] <= 120
for k in ("samples_bpc", "samples_ppl", "ms_per_sample"):
    assert isinstance(j[k], (int, float)) and math.isfinite(j[k]) and j[k] > 0, (k, j[k])
assert abs(j["samples_ppl"] - 2 ** j["samples_bpc"]) < 1e-9 * j["samples_ppl"]'
"$TFLM" quality -m "$M" --judge "$J" -n 3 --chars 40 --json 2>/dev/null \
    | grep -v '_per_sample' >"$TMP/q2.json"
grep -v '_per_sample' "$TMP/q1.json" >"$TMP/q1s.json"
cmp -s "$TMP/q1s.json" "$TMP/q2.json"
ok $? "quality: the same seed gives the same numbers"
"$TFLM" quality -m "$M" --judge "$J" -n 3 --chars 40 --json --seed 9 2>/dev/null \
    | grep -v '_per_sample' >"$TMP/q3.json"
! cmp -s "$TMP/q1s.json" "$TMP/q3.json"
ok $? "quality: another seed gives other samples"
grep -q '3/3 samples' "$TMP/err"
ok $? "quality: progress on stderr"

# ---- an ar model samples by default -----------------------------------------------------
rc 0 "quality of an ar model" "$TFLM" quality -m "$J" --judge "$J" -n 2 --chars 20 --json
cp "$TMP/out" "$TMP/qar.json"
js "$TMP/qar.json" "quality: an ar model decodes by sampling by default" '
assert j["decode"] == "sample" and j["temp"] == 1
assert math.isfinite(j["samples_bpc"]) and j["samples_bpc"] > 0'

# ---- a flow judge is allowed, with a warning ---------------------------------------------
rc 0 "quality with a flow judge" "$TFLM" quality -m "$M" --judge "$M" -n 2 --chars 20
grep -q 'warning: judge .*flow model' "$TMP/err"
ok $? "quality: a flow judge is warned about"

# ---- --real ------------------------------------------------------------------------------
i=0
while [ $i -lt 30 ]; do
    printf 'It is a truth universally acknowledged, that a single man\nin possession of a good fortune, must be in want of a wife.\n'
    i=$((i + 1))
done >"$TMP/real.txt"
rc 0 "quality --real --json" "$TFLM" quality -m "$M" --judge "$J" -n 3 --chars 40 \
    --real "$TMP/real.txt" --json
cp "$TMP/out" "$TMP/qr.json"
js "$TMP/qr.json" "quality --real: real-text numbers" '
assert j["real"].endswith("real.txt")
assert j["real_chars"] == 120, j["real_chars"]
for k in ("real_bpc", "real_ppl"):
    assert isinstance(j[k], (int, float)) and math.isfinite(j[k]) and j[k] > 0, (k, j[k])
assert abs(j["real_ppl"] - 2 ** j["real_bpc"]) < 1e-9 * j["real_ppl"]'
rc 0 "quality --real (text)" "$TFLM" quality -m "$M" --judge "$J" -n 3 --chars 40 --real "$TMP/real.txt"
grep -q '^flow.safetensors samples ' "$TMP/out" && grep -q '^real text (real.txt) ' "$TMP/out"
ok $? "quality: text table has the samples and real-text rows"
grep -q 'decode argmax' "$TMP/out"
ok $? "quality: text output says which decoding was used"
if [ $HAVE_PY -eq 1 ]; then
    python3 - "$TMP/out" "$TMP/qr.json" >"$TMP/pyerr" 2>&1 <<'EOF'
import json, sys
rows = {l.split()[0]: l.split() for l in open(sys.argv[1]) if l.startswith(("flow.", "real "))}
j = json.load(open(sys.argv[2]))
assert rows["flow.safetensors"][2] == "%.4f" % j["samples_bpc"], rows
assert rows["real"][3] == "%.4f" % j["real_bpc"], rows
EOF
    r=$?
    ok $r "quality: text and --json numbers agree"
    [ $r -eq 0 ] || sed 's/^/# /' "$TMP/pyerr"
else
    skip "quality: text and --json numbers agree" "no python3"
fi

echo "1..$n"
[ $failed -eq 0 ]
