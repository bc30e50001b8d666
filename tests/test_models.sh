#!/bin/sh
# test_models.sh: the shipped models (model/default.safetensors and
# model/ar.safetensors): their sha256 equal model/RECIPE.md's, they score a
# fixed paragraph (tests/data/paragraph.txt, from novels-valid.txt) within
# a stated tolerance of the number recorded there, and the README's
# generation command gives the same text twice. TAP output.
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
for m in default ar; do
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
echo "1..$n"
[ $fail -eq 0 ]
