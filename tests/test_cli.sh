#!/bin/sh
# tests/test_cli.sh: the tflm command line: exit codes, --help, --version,
# the --json shapes of info, score, encode, generate, layers and edit, and
# that text and JSON outputs agree. Prints one TAP line per check.
# Needs $TFLM_BIN (the built tflm); python3 checks the JSON (those checks
# are skipped without it). Exit 0 pass, 1 fail; a missing binary skips.

TFLM=${TFLM_BIN:-./tflm}
if [ ! -x "$TFLM" ]; then
    echo "1..0 # SKIP no tflm binary at $TFLM (set TFLM_BIN)"
    exit 0
fi
# messages and arrows in ASCII, no colour, no model from the environment
LC_ALL=C
LANG=C
NO_COLOR=1
export LC_ALL LANG NO_COLOR
unset TFLM_MODEL TFLM_THREADS

TMP=$(mktemp -d "${TMPDIR:-/tmp}/tflm-cli.XXXXXX") || exit 1
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
    python3 -c 'import json, sys
j = json.load(open(sys.argv[1]))
exec(sys.argv[2])' "$1" "$3" >"$TMP/pyerr" 2>&1
    r=$?
    ok $r "$2"
    [ $r -eq 0 ] || sed 's/^/# /' "$TMP/pyerr"
}

# ---- models of our own ------------------------------------------------------
# tiny: V 97, d 4, T 16, D 16, H 2, flip block 4, three mix1 flows
cat >"$TMP/tiny.json" <<'EOF'
{"format": "tflm", "version": 1, "vocab_size": 97, "latent_dim": 4, "patch": 1,
 "window": 16, "d_model": 16, "n_heads": 2, "flip_block": 4, "ln_eps": 1e-05,
 "flows": [{"type": "mix1", "layers": 1, "mixtures": 3, "direction": "l2r"},
           {"type": "mix1", "layers": 1, "mixtures": 3, "direction": "flip"},
           {"type": "mix1", "layers": 1, "mixtures": 2, "direction": "l2r"}]}
EOF
# the same with flip block 0: no exact context
sed 's/"flip_block": 4/"flip_block": 0/' "$TMP/tiny.json" >"$TMP/tiny0.json"
# the ar baseline
cat >"$TMP/ar.json" <<'EOF'
{"format": "tflm", "version": 1, "vocab_size": 97, "latent_dim": 4, "patch": 1,
 "window": 16, "d_model": 16, "n_heads": 2, "flip_block": 4, "ln_eps": 1e-05,
 "flows": [{"type": "ar", "layers": 1}]}
EOF
M="$TMP/m.safetensors"
L=3

# ---- the program --------------------------------------------------------------
rc 0 "--version" "$TFLM" --version
grep -Eq '^tflm [0-9]+\.[0-9]+' "$TMP/out"
ok $? "--version prints 'tflm X.Y'"
rc 0 "--help" "$TFLM" --help
cp "$TMP/out" "$TMP/help.txt"
for c in init info score encode generate layers edit; do
    grep -q "^  $c " "$TMP/help.txt"
    ok $? "--help lists $c"
    rc 0 "$c --help" "$TFLM" "$c" --help
    grep -q "^Usage: tflm $c" "$TMP/out"
    ok $? "$c --help prints its usage on stdout"
done
grep -q '^  130 ' "$TMP/help.txt" && grep -q '^  66 ' "$TMP/help.txt"
ok $? "help documents the exit codes"
rc 64 "no subcommand is a usage error" "$TFLM"
rc 64 "unknown subcommand" "$TFLM" frobnicate
rc 64 "unknown option" "$TFLM" info --frobnicate
# the app needs a terminal; here stdin/stdout are not one (tests/test_app.sh drives it in tmux)
rc 64 "ui refuses to run without a terminal" "$TFLM" ui </dev/null
rc 64 "demo refuses to run without a terminal" "$TFLM" demo </dev/null

# ---- init -------------------------------------------------------------------------
rc 0 "init" "$TFLM" init --config "$TMP/tiny.json" -o "$M" --seed 1
test -s "$M"
ok $? "init wrote the model"
rc 0 "init is deterministic for a seed" "$TFLM" init --config "$TMP/tiny.json" -o "$TMP/m2.safetensors" --seed 1
cmp -s "$M" "$TMP/m2.safetensors"
ok $? "init: same seed, same file"
rc 64 "init without --config" "$TFLM" init -o "$TMP/x.safetensors"
rc 64 "init without -o" "$TFLM" init --config "$TMP/tiny.json"
rc 66 "init with a missing config" "$TFLM" init --config "$TMP/nonexistent.json" -o "$TMP/x.safetensors"
echo '{"format": "tflm", "version": 1, "vocab_size": ' >"$TMP/broken.json"
rc 2 "init with a malformed config" "$TFLM" init --config "$TMP/broken.json" -o "$TMP/x.safetensors"
rc 0 "init flip block 0" "$TFLM" init --config "$TMP/tiny0.json" -o "$TMP/m0.safetensors"
rc 0 "init ar" "$TFLM" init --config "$TMP/ar.json" -o "$TMP/ar.safetensors"

# ---- model resolution and bad models --------------------------------------------------
rc 66 "missing model file" "$TFLM" info -m "$TMP/nonexistent.safetensors"
echo "this is not a model" >"$TMP/bad.safetensors"
rc 2 "garbage model file" "$TFLM" info -m "$TMP/bad.safetensors"
grep -q '^tflm: .*bad.safetensors: ' "$TMP/err"
ok $? "bad model: one line naming the file"
head -c 200 "$M" >"$TMP/trunc.safetensors"
rc 2 "truncated model file" "$TFLM" info -m "$TMP/trunc.safetensors"
TFLM_MODEL="$M" "$TFLM" info >"$TMP/out" 2>"$TMP/err"
ok $? "TFLM_MODEL names the model"
grep -q "$M" "$TMP/out"
ok $? "info shows the model path"
rc 64 "--threads 0" "$TFLM" info -m "$M" --threads 0
TFLM_THREADS=many "$TFLM" info -m "$M" >/dev/null 2>&1
[ $? -eq 64 ]
ok $? "TFLM_THREADS=many is a usage error"

# ---- info -------------------------------------------------------------------------
rc 0 "info" "$TFLM" info -m "$M"
grep -q 'untrained (random init' "$TMP/out"
ok $? "info: untrained model says so"
grep -q 'flip' "$TMP/out"
ok $? "info: shows flow directions"
rc 0 "info --json" "$TFLM" info -m "$M" --json
cp "$TMP/out" "$TMP/info.json"
js "$TMP/info.json" "info --json: keys and sizes" '
for k in ("n_flows", "n_params", "vocab_size", "positions", "channels", "flows", "vocab", "config", "train"):
    assert k in j, k
assert j["n_flows"] == 3 and len(j["flows"]) == 3
assert [f["direction"] for f in j["flows"]] == ["l2r", "flip", "l2r"]
assert [f["mixtures"] for f in j["flows"]] == [3, 3, 2]
assert j["vocab_size"] == 97 and len(j["vocab"]) == 97 and j["vocab"][1] == "\n"
assert j["positions"] == 16 and j["channels"] == 4 and j["n_params"] > 0
assert j["config"]["window"] == 16'
rc 0 "info --json of ar" "$TFLM" info -m "$TMP/ar.safetensors" --json
cp "$TMP/out" "$TMP/info_ar.json"
js "$TMP/info_ar.json" "info --json of ar: one ar flow" '
assert j["type"] == "ar" and j["flows"][0]["type"] == "ar"'

# ---- score ------------------------------------------------------------------------
printf 'It is a truth universally acknowledged, that a single man in possession\nof a good fortune, must be in want of a wife.\n' >"$TMP/a.txt"
printf 'Call me Ishmael.\n' >"$TMP/b.txt"
rc 64 "score without files" "$TFLM" score -m "$M"
rc 66 "score a missing file" "$TFLM" score -m "$M" "$TMP/nonexistent.txt"
rc 64 "score --mean with --samples" "$TFLM" score -m "$M" --mean --samples 2 "$TMP/a.txt"
rc 0 "score --mean" "$TFLM" score -m "$M" --mean "$TMP/a.txt"
cp "$TMP/out" "$TMP/score.txt"
grep -q 'bits/char (mean encoding, not the ELBO' "$TMP/score.txt"
ok $? "score --mean is labelled as not the ELBO"
rc 0 "score --mean --json" "$TFLM" score -m "$M" --mean --json "$TMP/a.txt"
cp "$TMP/out" "$TMP/score.json"
bpc_text=$(sed -n 's/^.*: \([-0-9.]*\) bits\/char.*$/\1/p' "$TMP/score.txt")
js "$TMP/score.json" "score: text and --json numbers agree" "
assert '%.4f' % j['files'][0]['bpc'] == '$bpc_text', (j['files'][0]['bpc'], '$bpc_text')"
js "$TMP/score.json" "score --json: keys, per-layer lengths, elbo = R + lp - ln" '
import math
f = j["files"][0]
for k in ("file", "chars", "windows", "bpc", "elbo", "R", "lp", "ln", "logdet", "mean", "samples", "seed"):
    assert k in f, k
assert f["mean"] is True and f["chars"] == 118 and f["windows"] == 8
assert len(f["lp"]) == len(f["ln"]) == len(f["logdet"]) == 3
e = f["R"] + sum(f["lp"]) - sum(f["ln"][:-1])
assert abs(e - f["elbo"]) <= 1e-6 * abs(f["elbo"]) + 1e-6, (e, f["elbo"])
assert abs(f["bpc"] + f["elbo"] / (f["chars"] * math.log(2))) < 1e-9
assert j["total"]["chars"] == f["chars"]'
rc 0 "score (ELBO)" "$TFLM" score -m "$M" --samples 2 --seed 7 "$TMP/a.txt"
cp "$TMP/out" "$TMP/elbo1.txt"
grep -q 'bits/char (ELBO, 2 samples, seed 7;' "$TMP/elbo1.txt"
ok $? "score: ELBO labelled with samples and seed"
"$TFLM" score -m "$M" --samples 2 --seed 7 "$TMP/a.txt" >"$TMP/elbo2.txt" 2>/dev/null
cmp -s "$TMP/elbo1.txt" "$TMP/elbo2.txt"
ok $? "score: deterministic for a seed"
"$TFLM" score -m "$M" --samples 2 --seed 7 --threads 2 "$TMP/a.txt" >"$TMP/elbo3.txt" 2>/dev/null
cmp -s "$TMP/elbo1.txt" "$TMP/elbo3.txt"
ok $? "score: same at 2 threads"
iw_text=$(sed -n 's/^.*; importance-weighted bound \([-0-9.]*\) bits\/char$/\1/p' "$TMP/elbo1.txt")
elbo_text=$(sed -n 's/^.*: \([-0-9.]*\) bits\/char (ELBO.*$/\1/p' "$TMP/elbo1.txt")
[ -n "$iw_text" ] && awk -v a="$iw_text" -v b="$elbo_text" 'BEGIN { exit !(a + 0 <= b + 0) }'
ok $? "score --samples 2: the line gives the importance-weighted bound, not above the ELBO ($iw_text <= $elbo_text)"
"$TFLM" score -m "$M" "$TMP/a.txt" >"$TMP/elbo4.txt" 2>/dev/null
! grep -q 'importance-weighted' "$TMP/elbo4.txt"
ok $? "score with 1 sample prints no importance-weighted bound (it equals the ELBO)"
"$TFLM" score -m "$M" --samples 4 --seed 7 --json "$TMP/a.txt" "$TMP/b.txt" >"$TMP/iw.json" 2>/dev/null
js "$TMP/iw.json" "score --json: iw_bpc and iw_elbo, never below the ELBO, totals summed" '
import math
for f in j["files"] + [j["total"]]:
    assert f["iw_elbo"] >= f["elbo"], (f["iw_elbo"], f["elbo"])
    assert abs(f["iw_bpc"] + f["iw_elbo"] / (f["chars"] * math.log(2))) < 1e-9
t = j["total"]
assert abs(t["iw_elbo"] - sum(f["iw_elbo"] for f in j["files"])) <= 1e-9 * abs(t["iw_elbo"])'
rc 0 "score two files" "$TFLM" score -m "$M" --mean "$TMP/a.txt" "$TMP/b.txt"
[ "$(wc -l <"$TMP/out")" -eq 3 ] && grep -q '^total: ' "$TMP/out"
ok $? "score: two files and a total line"
"$TFLM" score -m "$M" --mean - <"$TMP/a.txt" >"$TMP/stdin.txt" 2>/dev/null
[ "$(sed 's/^[^:]*://' "$TMP/stdin.txt")" = "$(sed 's/^[^:]*://' "$TMP/score.txt")" ]
ok $? "score: stdin gives the same number"
printf 'a \342\200\234quoted\342\200\235 word\n' >"$TMP/utf8.txt"
rc 0 "score UTF-8 text" "$TFLM" score -m "$M" --mean "$TMP/utf8.txt"
grep -q '2 characters mapped' "$TMP/err"
ok $? "score: warns how many characters were mapped"
rc 0 "score --json with an ar model" "$TFLM" score -m "$TMP/ar.safetensors" --json "$TMP/a.txt"
cp "$TMP/out" "$TMP/score_ar.json"
js "$TMP/score_ar.json" "score --json ar: empty per-layer lists" '
f = j["files"][0]
assert f["lp"] == [] and f["ln"] == [] and f["logdet"] == [] and f["bpc"] > 0'

# ---- encode -------------------------------------------------------------------------
rc 0 "encode --json" "$TFLM" encode -m "$M" --mean --json "$TMP/a.txt"
cp "$TMP/out" "$TMP/encode.json"
js "$TMP/encode.json" "encode --json: tokens T, states L+1 x N x c, per-layer L" '
import math
for k in ("tokens", "states", "decoded", "lp", "ln", "logdet", "R", "elbo", "bpc"):
    assert k in j, k
assert len(j["tokens"]) == 16 and all(0 <= t < 97 for t in j["tokens"])
assert len(j["states"]) == 3 + 1
for s in j["states"]:
    assert len(s) == 16 and all(len(r) == 4 for r in s)
    assert all(isinstance(x, float) or isinstance(x, int) for r in s for x in r)
assert len(j["decoded"]) == 4 and all(isinstance(d, str) for d in j["decoded"])
assert len(j["lp"]) == len(j["ln"]) == len(j["logdet"]) == 3
e = j["R"] + sum(j["lp"]) - sum(j["ln"][:-1])
assert abs(e - j["elbo"]) <= 1e-6 * abs(j["elbo"]) + 1e-6'
js "$TMP/encode.json" "encode agrees with score --mean" "
s = json.load(open('$TMP/score.json'))['files'][0]
assert abs(s['elbo'] - j['elbo']) <= 1e-9 * abs(s['elbo']), (s['elbo'], j['elbo'])"
rc 0 "encode (text)" "$TFLM" encode -m "$M" --mean "$TMP/a.txt"
rc 64 "encode two files" "$TFLM" encode -m "$M" --json "$TMP/a.txt" "$TMP/b.txt"
rc 66 "encode a missing file" "$TFLM" encode -m "$M" --json "$TMP/nonexistent.txt"

# ---- generate ---------------------------------------------------------------------
CTX="It was the best"
rc 0 "generate" "$TFLM" generate -m "$M" -p "$CTX" -n 24 --seed 5
cp "$TMP/out" "$TMP/g1.txt"
case "$(cat "$TMP/g1.txt")" in
"$CTX"*) r=0 ;;
*) r=1 ;;
esac
ok $r "generate: output starts with the context"
"$TFLM" generate -m "$M" -p "$CTX" -n 24 --seed 5 >"$TMP/g2.txt" 2>/dev/null
cmp -s "$TMP/g1.txt" "$TMP/g2.txt"
ok $? "generate: deterministic for a seed"
"$TFLM" generate -m "$M" -p "$CTX" -n 24 --seed 5 --threads 2 >"$TMP/g3.txt" 2>/dev/null
cmp -s "$TMP/g1.txt" "$TMP/g3.txt"
ok $? "generate: same at 2 threads"
"$TFLM" generate -m "$M" -p "$CTX" -n 24 --seed 6 >"$TMP/g4.txt" 2>/dev/null
! cmp -s "$TMP/g1.txt" "$TMP/g4.txt"
ok $? "generate: another seed, another text"
printf '%s' "$CTX" >"$TMP/ctx.txt"
"$TFLM" generate -m "$M" -f "$TMP/ctx.txt" -n 24 --seed 5 >"$TMP/g5.txt" 2>/dev/null
cmp -s "$TMP/g1.txt" "$TMP/g5.txt"
ok $? "generate: -f FILE is the same as -p"
rc 0 "generate --decode sample" "$TFLM" generate -m "$M" -n 16 --decode sample --temp 0.7 --prior-temp 0.8
rc 0 "generate --no-blas" "$TFLM" generate -m "$M" -n 16 --no-blas
rc 64 "generate -p and -f" "$TFLM" generate -m "$M" -p x -f "$TMP/ctx.txt"
rc 64 "generate --decode bogus" "$TFLM" generate -m "$M" --decode bogus
rc 64 "generate -n -3" "$TFLM" generate -m "$M" -n -3
rc 66 "generate -f missing" "$TFLM" generate -m "$M" -f "$TMP/nonexistent.txt"
rc 1 "generate: flip block 0 refuses a context" "$TFLM" generate -m "$TMP/m0.safetensors" -p "$CTX" -n 8
rc 0 "generate: flip block 0 without a context" "$TFLM" generate -m "$TMP/m0.safetensors" -n 8
rc 0 "generate with an ar model" "$TFLM" generate -m "$TMP/ar.safetensors" -p "$CTX" -n 8
rc 0 "generate --json" "$TFLM" generate -m "$M" -p "$CTX" -n 24 --seed 5 --json
cp "$TMP/out" "$TMP/gen.json"
G1=$(cat "$TMP/g1.txt")
export G1
js "$TMP/gen.json" "generate --json: keys, layers L..0, text matches" '
import os
for k in ("context", "text", "seed", "tokens", "layers", "ms_per_layer"):
    assert k in j, k
assert j["context"] == "It was the best" and j["seed"] == 5
# the context kept is the tail that fits the window beside a new block
assert 24 < len(j["tokens"]) <= len(j["context"]) + 24
assert [x["layer"] for x in j["layers"]] == [3, 2, 1, 0]
assert j["layers"][-1]["text"] == j["text"]
assert os.environ["G1"] == j["context"] + j["text"].rstrip("\n") or \
       os.environ["G1"] == (j["context"] + j["text"]).rstrip("\n")'

# ---- layers -----------------------------------------------------------------------
rc 0 "layers" "$TFLM" layers -m "$M" -p "$CTX" -n 24 --seed 5
cp "$TMP/out" "$TMP/layers.txt"
[ "$(wc -l <"$TMP/layers.txt")" -eq $((L + 1)) ]
ok $? "layers: L+1 lines"
head -n 1 "$TMP/layers.txt" | grep -q '^3 -> '
ok $? "layers: starts at the noise layer with its arrow"
sed -n 2p "$TMP/layers.txt" | grep -q '^2 <- '
ok $? "layers: flip flows get <-"
tail -n 1 "$TMP/layers.txt" | grep -q '^0    '
ok $? "layers: ends at the text layer"
"$TFLM" layers -m "$M" -p "$CTX" -n 24 --seed 5 --with-context >"$TMP/layers2.txt" 2>/dev/null
tail -n 1 "$TMP/layers2.txt" | grep -q "^0    .*the best"
ok $? "layers --with-context shows the context"
LC_ALL=C.UTF-8 "$TFLM" layers -m "$M" -n 8 >"$TMP/layers3.txt" 2>/dev/null
head -n 1 "$TMP/layers3.txt" | grep -q "$(printf '^3 \342\206\222 ')"
ok $? "layers: a UTF-8 locale gets arrows"
rc 0 "layers --json" "$TFLM" layers -m "$M" -p "$CTX" -n 24 --seed 5 --json
grep -v ms_per_layer "$TMP/out" >"$TMP/l.json"
grep -v ms_per_layer "$TMP/gen.json" | cmp -s - "$TMP/l.json"
ok $? "layers --json is generate --json"
rc 64 "generate --with-context is layers only" "$TFLM" generate -m "$M" --with-context

# ---- layers --profile (the refinement profile) ------------------------------------
rc 0 "layers --profile" "$TFLM" layers -m "$M" -p "$CTX" -n 24 --seed 5 --profile
cp "$TMP/out" "$TMP/prof.txt"
[ "$(wc -l <"$TMP/prof.txt")" -eq $((L + 4)) ]
ok $? "layers --profile: two header lines, L+1 layers, a token count"
sed -n 3p "$TMP/prof.txt" | grep -Eq '^3 -> +[0-9]+\.[0-9]% +[01]\.[0-9]{3}$'
ok $? "layers --profile: rows start at the noise layer: agreement %, confidence"
sed -n "$((L + 3))p" "$TMP/prof.txt" | grep -Eq '^0 +100\.0% '
ok $? "layers --profile: the text layer agrees 100% with the generation"
rc 0 "layers --profile --json" "$TFLM" layers -m "$M" -p "$CTX" -n 24 --seed 5 --profile --json
cp "$TMP/out" "$TMP/prof.json"
js "$TMP/prof.json" "layers --profile --json: shape, layer 0 agrees, values in [0,1], matches the text" '
assert sorted(j) == ["generation", "n_flows"], sorted(j)
g = j["generation"]
assert j["n_flows"] == 3 and g["seed"] == 5
assert len(g["agree"]) == len(g["confidence"]) == 3 + 1
assert g["agree"][0] == 1.0
assert all(0 <= x <= 1 for x in g["agree"] + g["confidence"])
assert 0 < g["tokens"] <= 24
rows = open(sys.argv[1].replace("prof.json", "prof.txt")).read().split("\n")[2:6]
for l, row in zip((3, 2, 1, 0), rows):
    f = row.split()
    assert f[-2] == "%.1f%%" % (100 * g["agree"][l]), (row, g["agree"][l])
    assert abs(float(f[-1]) - g["confidence"][l]) <= 6e-4, (row, g["confidence"][l])'
printf 'Hello, world!' >"$TMP/hello.txt"
rc 0 "layers --text (one window)" "$TFLM" layers -m "$M" -n 8 --text "$TMP/hello.txt" --json
cp "$TMP/out" "$TMP/prof1.json"
"$TFLM" encode -m "$M" --mean --json "$TMP/hello.txt" >"$TMP/enc1.json" 2>/dev/null
js "$TMP/prof1.json" "layers --text: the encoded profile is that of tflm encode --mean" '
e = j["encoded"]
assert e["tokens"] == 13 and e["windows"] == 1 and e["file"].endswith("hello.txt")
enc = json.load(open(sys.argv[1].replace("prof1.json", "enc1.json")))
text = "Hello, world!"
checked = 0
for l, d in enumerate(enc["decoded"]):
    if len(d) == len(text):   # no character decoded to <pad>: positions line up
        a = sum(x == y for x, y in zip(d, text)) / len(text)
        assert abs(a - e["agree"][l]) < 1e-6, (l, a, e["agree"][l])
        checked += 1
assert checked > 0'
rc 0 "layers --text (several windows)" "$TFLM" layers -m "$M" -p "$CTX" -n 24 --seed 5 --text "$TMP/a.txt"
cp "$TMP/out" "$TMP/prof2.txt"
head -n 1 "$TMP/prof2.txt" | grep -q 'generation.*encoded text'
ok $? "layers --text: columns for the generation and the encoded text"
tail -n 1 "$TMP/prof2.txt" | grep -Eq '^tokens +[0-9]+ +[0-9]+ in [0-9]+ windows$'
ok $? "layers --text: token counts and windows"
rc 0 "layers --text --json" "$TFLM" layers -m "$M" -p "$CTX" -n 24 --seed 5 --text "$TMP/a.txt" --json
cp "$TMP/out" "$TMP/prof2.json"
NA=$(wc -c <"$TMP/a.txt" | tr -d ' ')
export NA
js "$TMP/prof2.json" "layers --text --json: both profiles, windows of 16 tokens, values in [0,1]" '
import os
n = int(os.environ["NA"])
g, e = j["generation"], j["encoded"]
assert g == json.load(open(sys.argv[1].replace("prof2.json", "prof.json")))["generation"]
assert len(e["agree"]) == len(e["confidence"]) == 3 + 1
assert all(0 <= x <= 1 for x in e["agree"] + e["confidence"])
assert e["tokens"] == n and e["windows"] == -(-n // 16), (e, n)'
rc 0 "layers --profile with an ar model" "$TFLM" layers -m "$TMP/ar.safetensors" -p "$CTX" -n 8 --profile --text "$TMP/a.txt"
rc 64 "generate --profile is layers only" "$TFLM" generate -m "$M" --profile
rc 64 "layers --profile --with-context" "$TFLM" layers -m "$M" --profile --with-context
rc 66 "layers --text with a missing file" "$TFLM" layers -m "$M" --text "$TMP/nonexistent.txt"
: >"$TMP/empty.txt"
rc 1 "layers --text with an empty file" "$TFLM" layers -m "$M" --text "$TMP/empty.txt"

# ---- edit -------------------------------------------------------------------------
TEXT="Hello, world!"
rc 0 "edit" "$TFLM" edit -m "$M" --layer 2 --span 8:12 --op noise:0.5 --seed 3 "$TEXT"
[ "$(wc -l <"$TMP/out")" -eq 1 ] && [ "$(wc -c <"$TMP/out")" -le $((${#TEXT} + 1)) ]
ok $? "edit: one line, no longer than the text"
cp "$TMP/out" "$TMP/e1.txt"
"$TFLM" edit -m "$M" --layer 2 --span 8:12 --op noise:0.5 --seed 3 "$TEXT" >"$TMP/e2.txt" 2>/dev/null
cmp -s "$TMP/e1.txt" "$TMP/e2.txt"
ok $? "edit: deterministic for a seed"
rc 0 "edit --json" "$TFLM" edit -m "$M" --layer 2 --span 8:12 --op noise:0.5 --seed 3 --json "$TEXT"
cp "$TMP/out" "$TMP/edit.json"
js "$TMP/edit.json" "edit --json: before/after states, span, text before the block kept" '
assert j["layer"] == 2 and j["span"] == [8, 12] and j["op"] == "noise:0.5"
for side in ("before", "after"):
    t = j[side]
    assert len(t["states"]) == 3 + 1, side
    assert all(len(s) == 16 and all(len(r) == 4 for r in s) for s in t["states"])
    assert len(t["decoded"]) == 4 and len(t["tokens"]) == 16
b, a = j["before"], j["after"]
assert b["text"] == "Hello, world!"
blk = (b["n_pad"] + 8) // 4 * 4
assert a["tokens"][:blk] == b["tokens"][:blk]'
if [ $HAVE_PY -eq 1 ]; then
    python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["after"]["text"])' \
        "$TMP/edit.json" >"$TMP/e3.txt" 2>/dev/null
    cmp -s "$TMP/e1.txt" "$TMP/e3.txt"
    ok $? "edit: text and --json agree"
else
    skip "edit: text and --json agree" "no python3"
fi
rc 0 "edit resample --local" "$TFLM" edit -m "$M" --layer 3 --span 0:4 --op resample --local "$TEXT"
rc 0 "edit replace" "$TFLM" edit -m "$M" --layer 1 --span 0:5 --op replace:Howdy "$TEXT"
printf '%s' "$TEXT" >"$TMP/text.txt"
"$TFLM" edit -m "$M" --layer 2 --span 8:12 --op noise:0.5 --seed 3 -f "$TMP/text.txt" >"$TMP/e4.txt" 2>/dev/null
cmp -s "$TMP/e1.txt" "$TMP/e4.txt"
ok $? "edit: -f FILE is the same as TEXT"
rc 64 "edit without --layer" "$TFLM" edit -m "$M" --span 0:2 --op resample "$TEXT"
rc 64 "edit with a bad --span" "$TFLM" edit -m "$M" --layer 1 --span 5:2 --op resample "$TEXT"
rc 64 "edit with a bad --op" "$TFLM" edit -m "$M" --layer 1 --span 0:2 --op frobnicate "$TEXT"
rc 64 "edit without TEXT" "$TFLM" edit -m "$M" --layer 1 --span 0:2 --op resample
rc 1 "edit: span past the text" "$TFLM" edit -m "$M" --layer 1 --span 0:99 --op resample "$TEXT"
rc 1 "edit: layer past L" "$TFLM" edit -m "$M" --layer 9 --span 0:2 --op resample "$TEXT"

# ---- SIGINT -------------------------------------------------------------------------
# a long scoring run, interrupted: exit 130 (skipped if it ends first)
i=0
: >"$TMP/long.txt"
while [ $i -lt 400 ]; do
    cat "$TMP/a.txt" "$TMP/a.txt" "$TMP/a.txt" "$TMP/a.txt" "$TMP/a.txt" >>"$TMP/long.txt"
    i=$((i + 1))
done
"$TFLM" score -m "$M" --mean "$TMP/long.txt" "$TMP/long.txt" "$TMP/long.txt" >/dev/null 2>&1 &
pid=$!
sleep 1
kill -INT $pid 2>/dev/null
wait $pid
r=$?
if [ $r -eq 0 ]; then
    skip "SIGINT exits 130" "the run ended before the signal"
else
    [ $r -eq 130 ]
    ok $? "SIGINT exits 130 (got $r)"
fi

echo "1..$n"
if [ $failed -gt 0 ]; then
    echo "# $failed of $n checks failed"
    exit 1
fi
exit 0
