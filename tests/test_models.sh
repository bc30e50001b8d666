#!/bin/sh
# test_models.sh: the shipped models (model/default.safetensors, the
# teaching model the app opens, flow 2 at a tenth of the learning rate,
# 24000 steps in two stages; model/ar.safetensors, its ar twin, yardstick
# and judge; model/likelihood.safetensors, the 14000-step flow with flow 2
# at a quarter): their
# sha256 equal model/RECIPE.md's, they score a fixed paragraph
# (tests/data/paragraph.txt, from novels-valid.txt) within a stated
# tolerance of the number recorded there, the README's generation command
# gives the same text twice, and the default model's refinement profile
# rises through its layers with the recorded numbers. TAP output.
set -u
BIN=${TFLM_BIN:-./tflm}
SRC=${TFLM_SRCDIR:-.}
recipe="$SRC/model/RECIPE.md"
n=0; fail=0
ok() { n=$((n + 1)); echo "ok $n - $*"; }
notok() { n=$((n + 1)); fail=$((fail + 1)); echo "not ok $n - $*"; }
check() { d=$1; shift; if "$@"; then ok "$d"; else notok "$d"; fi; }
if [ ! -f "$SRC/model/default.safetensors" ] || [ ! -f "$recipe" ]; then
    echo "1..0 # SKIP no shipped model in $SRC/model"; exit 0
fi
for m in default likelihood ar; do
    f="$SRC/model/$m.safetensors"
    want=$(sed -n "s/^| \`$m.safetensors\` | .* | \`\([0-9a-f]\{64\}\)\` |.*/\1/p" "$recipe")
    got=$(sha256sum "$f" | cut -c1-64)
    check "$m.safetensors: sha256 $got equals RECIPE.md's" test -n "$want" -a "$got" = "$want"
    rec=$(sed -n "s/^| \`$m.safetensors\` | \([0-9.]*\) |.*/\1/p" "$recipe")
    score=$("$BIN" score --mean -m "$f" "$SRC/tests/data/paragraph.txt" | sed -n 's/.*: \([0-9.]*\) bits\/char.*/\1/p')
    # mean encoding is deterministic; 2e-4 relative covers float summation
    # order across BLAS kernels and CPUs (DESIGN §6: sums agree to ~1e-4)
    check "$m.safetensors: paragraph scores $score bits/char, recorded $rec (within 2e-4 relative)" \
        awk -v a="$score" -v b="$rec" 'BEGIN { d = a - b; if (d < 0) d = -d; exit !(b > 0 && d <= 2e-4 * b) }'
done
a=$("$BIN" generate -m "$SRC/model/default.safetensors" -p "It is a truth universally" -n 200 --seed 1)
b=$("$BIN" generate -m "$SRC/model/default.safetensors" -p "It is a truth universally" -n 200 --seed 1 --threads 2)
check "the README's generation gives the same text on every run (1 and 2 threads)" test "$a" = "$b"
words=$(printf '%s' "$a" | tr -cs 'A-Za-z' '\n' | grep -c -x -E 'the|and|of|to|a|in|was|her|he|she|it|that|his|had|with|for|as|not|but|be|you|at|on|my|which|i|is')
check "the generation has common English words ($words of the 27 most common kinds)" test "$words" -ge 5
# The default model's refinement profile (model/RESULTS.md): agreement of
# each state's decoded text with the final text rises from the noise h^(L)
# to h^(0) = 100 %, and equals the recorded numbers. Both runs are
# deterministic (fixed seed, mean encoding); a slack of one token of 120 and
# two of 680 covers float summation order across BLAS kernels flipping a
# token that sits on a decision boundary.
# Recorded (h^(0..3)): generation 1, 0.7917, 0.3083, 0.0083 (95, 37, 1 of
# 120 tokens); encoded paragraph 1, 0.7735, 0.2441, 0.0221 (526, 166, 15 of
# 680).
prof=$("$BIN" layers --profile --json -m "$SRC/model/default.safetensors" -p "It is a truth universally" \
       -n 120 --seed 1 --text "$SRC/tests/data/paragraph.txt" | tr -d ' \n')
for spec in "generation 120 1 0.791667 0.308333 0.00833333" "encoded 680 2 0.773529 0.244118 0.0220588"; do
    set -- $spec
    part=$1; ntok=$2; slack=$3; shift 3
    agree=$(printf '%s' "$prof" | sed -n "s/.*\"$part\":{\"agree\":\[\([^]]*\)\].*/\1/p")
    check "default model, $part: profile h^(0..3) = $agree rises to 100 % and equals 1,$1,$2,$3 within $slack of $ntok tokens" \
        awk -v a="$agree" -v want="1,$1,$2,$3" -v n="$ntok" -v k="$slack" 'BEGIN {
            m = split(a, v, ","); split(want, w, ","); if (m != 4 || v[1] != 1) exit 1;
            for (i = 2; i <= m; i++) { if (v[i] > v[i - 1]) exit 1;
                d = v[i] - w[i]; if (d < 0) d = -d; if (d * n > k + 1e-6) exit 1 }
            exit 0 }'
    # issue 7: at least two intermediate states strictly inside (15 %, 85 %).
    # Implied by the recorded numbers today; stated on its own so that
    # re-recording the profile for a new default cannot drop the criterion.
    check "default model, $part: two intermediate states (h^(1), h^(2)) agree strictly between 15 % and 85 %" \
        awk -v a="$agree" 'BEGIN { split(a, v, ","); c = 0;
            for (i = 2; i <= 4; i++) if (v[i] > 0.15 && v[i] < 0.85) c++; exit !(c >= 2) }'
done
echo "1..$n"
[ $fail -eq 0 ]
