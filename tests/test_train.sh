#!/bin/sh
# test_train.sh: tflm train end to end on a tiny model and a short text:
# validation bits per character drop by a stated margin, the same seed gives
# the same weights, a run killed with SIGKILL and resumed from its last
# checkpoint reaches the same weights bit for bit as an uninterrupted run,
# SIGTERM saves a checkpoint, a corrupted checkpoint is refused with its
# reason, and a checkpoint write that fails (full disk) keeps the previous
# checkpoint intact; flow_lr_scale holds a flow back (0 freezes it). TAP output.
set -u
BIN=${TFLM_BIN:-./tflm}
n=0; fail=0
ok() { n=$((n + 1)); echo "ok $n - $*"; }
notok() { n=$((n + 1)); fail=$((fail + 1)); echo "not ok $n - $*"; }
check() { d=$1; shift; if "$@"; then ok "$d"; else notok "$d"; fi; }
command -v python3 >/dev/null 2>&1 || { echo "1..0 # SKIP python3 is needed to compare weights"; exit 0; }
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT

# a short text: a few English sentences repeated with variations
python3 - "$tmp" <<'PY'
import sys, random
r = random.Random(4)
words = "the a of and to in was her she he it that his had with for as not but be you at on my which".split()
names = ["Elinor", "Marianne", "Edward", "Mrs. Dashwood", "Willoughby", "Colonel Brandon"]
def sent():
    s = " ".join(r.choice(words) for _ in range(r.randint(4, 9)))
    return r.choice(names) + " " + s + r.choice([".", ",", "!", "?"])
train = "\n".join(" ".join(sent() for _ in range(3)) for _ in range(600)) + "\n"
valid = "\n".join(" ".join(sent() for _ in range(3)) for _ in range(30)) + "\n"
open(sys.argv[1] + "/train.txt", "w").write(train)
open(sys.argv[1] + "/valid.txt", "w").write(valid)
PY

cat > "$tmp/cfg.json" <<'EOF2'
{"model": {"format": "tflm", "version": 1, "vocab_size": 97, "latent_dim": 4, "patch": 1, "window": 32,
           "d_model": 32, "n_heads": 2, "flip_block": 8, "ln_eps": 1e-05,
           "flows": [{"type": "mix1", "layers": 1, "mixtures": 4, "direction": "l2r"},
                     {"type": "mix1", "layers": 1, "mixtures": 4, "direction": "flip"}]},
 "schedule": "joint", "steps": 150, "batch": 8, "lr": 0.005, "warmup": 10, "seed": 3,
 "valid_every": 0, "valid_chars": 4000, "log_every": 50, "checkpoint_every": 25}
EOF2

weights() {   # sha256 of a safetensors file's weights (no metadata, no opt.* moments);
              # with a second argument, of the tensors whose names start with it
    python3 - "$1" "${2:-}" <<'PY'
import sys, struct, hashlib, json
b = open(sys.argv[1], "rb").read()
n = struct.unpack("<Q", b[:8])[0]
h = json.loads(b[8:8 + n]); h.pop("__metadata__", None)
pre = sys.argv[2]
keep = (lambda k: k.startswith(pre)) if pre else (lambda k: not k.startswith("opt."))
parts = [b[8 + n + v["data_offsets"][0]: 8 + n + v["data_offsets"][1]] for k, v in sorted(h.items()) if keep(k)]
print(hashlib.sha256(b"".join(parts)).hexdigest() if parts else "none")
PY
}
bpc() { "$BIN" score -m "$1" "$tmp/valid.txt" | sed -n 's/.*: \([0-9.]*\) bits\/char.*/\1/p'; }

"$BIN" init --config /dev/stdin -o "$tmp/init.safetensors" --seed 3 <<'EOF2'
{"format": "tflm", "version": 1, "vocab_size": 97, "latent_dim": 4, "patch": 1, "window": 32,
 "d_model": 32, "n_heads": 2, "flip_block": 8, "ln_eps": 1e-05,
 "flows": [{"type": "mix1", "layers": 1, "mixtures": 4, "direction": "l2r"},
           {"type": "mix1", "layers": 1, "mixtures": 4, "direction": "flip"}]}
EOF2
before=$(bpc "$tmp/init.safetensors")

"$BIN" train -q --config "$tmp/cfg.json" --data "$tmp/train.txt" --valid "$tmp/valid.txt" -o "$tmp/a.safetensors" --threads 2
check "train runs to the end (exit $?)" test -f "$tmp/a.safetensors"
after=$(bpc "$tmp/a.safetensors")
echo "# validation bits/char: $before before, $after after 150 steps"
# 150 joint steps on this text take a random model from ~6.5 to below 4.5
# bits/char in every run we measured; 1.5 bits is far above seed noise
check "validation bits/char drop by at least 1.5 ($before -> $after)" \
    python3 -c "import sys; sys.exit(0 if $before - $after >= 1.5 else 1)"
check "the log file records the run" grep -q "done: 150 steps" "$tmp/a.safetensors.log"
"$BIN" info -m "$tmp/a.safetensors" > "$tmp/info.txt"
check "the model records its training (tflm.train)" grep -q '"steps": 150' "$tmp/info.txt"

"$BIN" train -q --config "$tmp/cfg.json" --data "$tmp/train.txt" -o "$tmp/b.safetensors" --threads 2
check "the same seed gives the same weights" test "$(weights "$tmp/a.safetensors")" = "$(weights "$tmp/b.safetensors")"

# SIGKILL during training, then resume from the last checkpoint
sed 's/"steps": 150/"steps": 1000/' "$tmp/cfg.json" > "$tmp/long.json"
"$BIN" train -q --config "$tmp/long.json" --data "$tmp/train.txt" -o "$tmp/c.safetensors" --threads 2 &
pid=$!
i=0
while [ $i -lt 600 ] && ! grep -q "checkpoint .* at step 50$" "$tmp/c.safetensors.log" 2>/dev/null; do
    sleep 0.05; i=$((i + 1))
done
kill -9 $pid 2>/dev/null; wait $pid 2>/dev/null
killed_at=$(sed -n 's/.*checkpoint .* at step \([0-9]*\)$/\1/p' "$tmp/c.safetensors.log" | tail -n 1)
check "the killed run left a checkpoint (step ${killed_at:-none}) and no final model" \
    sh -c "test -f '$tmp/c.safetensors.ckpt' && ! test -f '$tmp/c.safetensors'"
"$BIN" train -q --resume "$tmp/c.safetensors.ckpt" --data "$tmp/train.txt" -o "$tmp/c.safetensors" --threads 2
"$BIN" train -q --config "$tmp/long.json" --data "$tmp/train.txt" -o "$tmp/d.safetensors" --threads 2
check "killed at step ${killed_at:-?} and resumed: the same weights as an uninterrupted run, bit for bit" \
    test "$(weights "$tmp/c.safetensors")" = "$(weights "$tmp/d.safetensors")"

# SIGTERM: stops after the step with a checkpoint, exit 130
"$BIN" train -q --config "$tmp/long.json" --data "$tmp/train.txt" -o "$tmp/e.safetensors" 2> "$tmp/e.err" &
pid=$!
sleep 1
kill -TERM $pid; wait $pid; rc=$?
check "SIGTERM stops with exit 130 (got $rc)" test $rc -eq 130
check "SIGTERM wrote a checkpoint" grep -q "stopped at step" "$tmp/e.safetensors.log"
check "SIGTERM: one line on stderr, 'tflm: train: stopped at step N; checkpoint FILE'" \
    sh -c "test \$(wc -l < '$tmp/e.err') -eq 1 && grep -q '^tflm: train: stopped at step [0-9]*; checkpoint ' '$tmp/e.err'"
check "SIGTERM: a stop is not logged as an error" sh -c "! grep -q '^error:' '$tmp/e.safetensors.log'"

# a corrupted checkpoint is refused with its reason
cp "$tmp/c.safetensors.ckpt" "$tmp/bad.ckpt"
sz=$(wc -c < "$tmp/bad.ckpt")
python3 -c "import sys; f=open(sys.argv[1],'r+b'); f.truncate($sz - 1000)" "$tmp/bad.ckpt"
"$BIN" train -q --resume "$tmp/bad.ckpt" --data "$tmp/train.txt" -o "$tmp/f.safetensors" 2> "$tmp/err.txt"; rc=$?
check "a truncated checkpoint is refused (exit $rc, want 2)" test $rc -eq 2
check "... with its reason: $(head -c 150 "$tmp/err.txt")" grep -q "bad.ckpt" "$tmp/err.txt"
"$BIN" init --config /dev/stdin -o "$tmp/plain.safetensors" <<'EOF2'
{"format": "tflm", "version": 1, "vocab_size": 97, "latent_dim": 4, "patch": 1, "window": 32,
 "d_model": 32, "n_heads": 2, "flip_block": 8, "flows": [{"type": "mix1", "layers": 1, "mixtures": 4}]}
EOF2
"$BIN" train -q --resume "$tmp/plain.safetensors" --data "$tmp/train.txt" -o "$tmp/f.safetensors" 2> "$tmp/err.txt"; rc=$?
check "a model without optimizer state is refused as a checkpoint (exit $rc): $(head -c 120 "$tmp/err.txt")" \
    sh -c "test $rc -eq 2 && grep -q 'not a training checkpoint' '$tmp/err.txt'"

# a checkpoint write that fails (file size limit = full disk) keeps the previous one
cp "$tmp/c.safetensors.ckpt" "$tmp/g.safetensors.ckpt"
good=$(weights "$tmp/g.safetensors.ckpt")
( trap '' XFSZ; ulimit -f 64; exec "$BIN" train -q --resume "$tmp/g.safetensors.ckpt" --data "$tmp/train.txt" \
    -o "$tmp/g.safetensors" ) 2> "$tmp/err.txt"; rc=$?
check "a failed checkpoint write stops training with an error (exit $rc): $(head -c 120 "$tmp/err.txt")" test $rc -ne 0
check "the previous checkpoint is intact after the failed write" test "$(weights "$tmp/g.safetensors.ckpt")" = "$good"
check "no temporary file is left behind" sh -c "! ls '$tmp'/g.safetensors.ckpt.tmp* >/dev/null 2>&1"

# --set overrides a setting of the config
"$BIN" train -q --config "$tmp/cfg.json" --set steps=20 --set lr=0.001 --data "$tmp/train.txt" -o "$tmp/h.safetensors"
"$BIN" info -m "$tmp/h.safetensors" > "$tmp/info2.txt"
check "--set steps=20 runs 20 steps" grep -q '"steps": 20' "$tmp/info2.txt"
"$BIN" train -q --config "$tmp/cfg.json" --set nonsense --data "$tmp/train.txt" -o "$tmp/h.safetensors" 2>/dev/null; rc=$?
check "--set without = is a usage error (exit $rc)" test $rc -eq 64

# --stop-at: finish at a step of the long schedule and write the model
"$BIN" train -q --config "$tmp/long.json" --data "$tmp/train.txt" -o "$tmp/i.safetensors" --threads 2 --stop-at 60
"$BIN" info -m "$tmp/i.safetensors" > "$tmp/info3.txt"
check "--stop-at 60 writes a model that records 60 of 1000 steps" \
    sh -c "grep -q '\"steps\": 60,' '$tmp/info3.txt' && grep -q '\"schedule_steps\": 1000' '$tmp/info3.txt'"
"$BIN" train -q --config "$tmp/long.json" --data "$tmp/train.txt" -o "$tmp/j.safetensors" --threads 2 --stop-at 40
"$BIN" train -q --resume "$tmp/j.safetensors.ckpt" --data "$tmp/train.txt" -o "$tmp/j.safetensors" --threads 2 --stop-at 60
check "stopped at 40 and resumed to 60: the same weights as a run stopped at 60, bit for bit" \
    test "$(weights "$tmp/i.safetensors")" = "$(weights "$tmp/j.safetensors")"
"$BIN" train -q --resume "$tmp/i.safetensors.ckpt" --data "$tmp/train.txt" -o "$tmp/k.safetensors" --stop-at 60
check "a checkpoint already at the step is written out unchanged" \
    test "$(weights "$tmp/i.safetensors")" = "$(weights "$tmp/k.safetensors")"
"$BIN" train -q --config "$tmp/long.json" --set steps=60 --data "$tmp/train.txt" -o "$tmp/l.safetensors" --threads 2
check "the learning rate keeps the full schedule (a 60-step schedule gives other weights)" \
    test "$(weights "$tmp/i.safetensors")" != "$(weights "$tmp/l.safetensors")"
"$BIN" train -q --resume "$tmp/i.safetensors.ckpt" --data "$tmp/train.txt" -o "$tmp/m.safetensors" --stop-at 50 \
    2> "$tmp/err.txt"; rc=$?
check "--stop-at before the checkpoint's step is refused (exit $rc): $(head -c 120 "$tmp/err.txt")" \
    sh -c "test $rc -ne 0 && grep -q 'already at step 60' '$tmp/err.txt' && ! test -f '$tmp/m.safetensors'"
"$BIN" train -q --config "$tmp/cfg.json" --data "$tmp/train.txt" -o "$tmp/m.safetensors" --stop-at 151 2> "$tmp/err.txt"; rc=$?
check "--stop-at past the schedule is refused (exit $rc): $(head -c 120 "$tmp/err.txt")" \
    sh -c "test $rc -ne 0 && grep -q 'only 150 steps' '$tmp/err.txt'"
"$BIN" train -q --config "$tmp/cfg.json" --data "$tmp/train.txt" -o "$tmp/m.safetensors" --stop-at x 2>/dev/null; rc=$?
check "--stop-at x is a usage error (exit $rc)" test $rc -eq 64

# flow_lr_scale: a learning-rate factor per flow (issue 7: hold a flow back)
"$BIN" train -q --config "$tmp/cfg.json" --set 'flow_lr_scale=[1, 1]' --data "$tmp/train.txt" -o "$tmp/n.safetensors" --threads 2
check "flow_lr_scale [1, 1] gives the same weights as no factor, bit for bit" \
    test "$(weights "$tmp/a.safetensors")" = "$(weights "$tmp/n.safetensors")"
"$BIN" train -q --config "$tmp/cfg.json" --set 'flow_lr_scale=[1, 0]' --data "$tmp/train.txt" -o "$tmp/o.safetensors" --threads 2
"$BIN" train -q --config "$tmp/cfg.json" --set 'flow_lr_scale=[1, 0]' --set steps=20 --data "$tmp/train.txt" -o "$tmp/p.safetensors" --threads 2
check "flow_lr_scale [1, 0]: flow 2 stays at its initial weights (150 steps = 20 steps), flow 1 learns" \
    sh -c "test '$(weights "$tmp/o.safetensors" flows.2.)' = '$(weights "$tmp/p.safetensors" flows.2.)' &&
           test '$(weights "$tmp/o.safetensors" flows.1.)' != '$(weights "$tmp/p.safetensors" flows.1.)' &&
           test '$(weights "$tmp/o.safetensors" flows.2.)' != '$(weights "$tmp/a.safetensors" flows.2.)'"
"$BIN" train -q --config "$tmp/cfg.json" --set 'flow_lr_scale=[1, 0.5]' --data "$tmp/train.txt" -o "$tmp/q.safetensors" --threads 2
check "flow_lr_scale [1, 0.5] gives other weights than [1, 1] and [1, 0]" \
    sh -c "test '$(weights "$tmp/q.safetensors")' != '$(weights "$tmp/a.safetensors")' &&
           test '$(weights "$tmp/q.safetensors" flows.2.)' != '$(weights "$tmp/o.safetensors" flows.2.)'"
"$BIN" train -q --config "$tmp/cfg.json" --set 'flow_lr_scale=[1]' --data "$tmp/train.txt" -o "$tmp/r.safetensors" 2> "$tmp/err.txt"; rc=$?
check "flow_lr_scale with the wrong length is refused (exit $rc): $(head -c 120 "$tmp/err.txt")" \
    sh -c "test $rc -ne 0 && grep -q 'flow_lr_scale must list 2 numbers' '$tmp/err.txt' && ! test -f '$tmp/r.safetensors'"
"$BIN" train -q --config "$tmp/cfg.json" --set 'flow_lr_scale=[1, -1]' --data "$tmp/train.txt" -o "$tmp/r.safetensors" 2> "$tmp/err.txt"; rc=$?
check "a negative flow_lr_scale is refused (exit $rc): $(head -c 120 "$tmp/err.txt")" \
    sh -c "test $rc -ne 0 && grep -q 'flow_lr_scale\[1\] must be a number in 0..10' '$tmp/err.txt'"

# the config's keys are checked: a typo or a wrong type is refused, notes are kept
"$BIN" train -q --config "$tmp/cfg.json" --set learning_rate=0.001 --data "$tmp/train.txt" -o "$tmp/s.safetensors" \
    2> "$tmp/err.txt"; rc=$?
check "an unknown setting is refused (exit $rc, want 2): $(head -c 120 "$tmp/err.txt")" \
    sh -c "test $rc -eq 2 && grep -q \"unknown setting 'learning_rate'\" '$tmp/err.txt' && ! test -f '$tmp/s.safetensors'"
"$BIN" train -q --config "$tmp/cfg.json" --set 'lr="0.001"' --data "$tmp/train.txt" -o "$tmp/s.safetensors" \
    2> "$tmp/err.txt"; rc=$?
check "a setting of the wrong type is refused (exit $rc): $(head -c 120 "$tmp/err.txt")" \
    sh -c "test $rc -eq 2 && grep -q 'lr must be a number' '$tmp/err.txt'"

trainrec() {   # one field of a model's tflm.train record, as JSON (a dotted path)
    python3 - "$1" "$2" <<'PY'
import sys, struct, json
b = open(sys.argv[1], "rb").read()
n = struct.unpack("<Q", b[:8])[0]
r = json.loads(json.loads(b[8:8 + n])["__metadata__"]["tflm.train"])
for k in sys.argv[2].split("."): r = r[k] if isinstance(r, dict) and k in r else None
print(json.dumps(r))
PY
}
# "init": continue a trained model; its sha256 is checked and its record kept
sha_a=$(python3 -c "import hashlib,sys; print(hashlib.sha256(open(sys.argv[1],'rb').read()).hexdigest())" "$tmp/a.safetensors")
cat > "$tmp/cont.json" <<EOF2
{"init": "$tmp/a.safetensors", "init_sha256": "$sha_a", "init_note": "stage 2", "note": "a test",
 "schedule": "joint", "steps": 100, "batch": 8, "lr": 0.002, "warmup": 10, "seed": 4,
 "valid_every": 0, "valid_chars": 4000, "log_every": 50, "checkpoint_every": 25}
EOF2
"$BIN" train -q --config "$tmp/cont.json" --data "$tmp/train.txt" -o "$tmp/t.safetensors" --threads 2
cont=$(bpc "$tmp/t.safetensors")
check "init: the continued model records its start file's sha256 and that file's own record (150 steps)" \
    sh -c "test '$(trainrec "$tmp/t.safetensors" init.sha256)' = '\"$sha_a\"' &&
           test '$(trainrec "$tmp/t.safetensors" init.train.steps)' = 150 &&
           test '$(trainrec "$tmp/t.safetensors" steps)' = 100 &&
           test '$(trainrec "$tmp/t.safetensors" train_config.note)' = '\"a test\"'"
echo "# validation bits/char: $after after 150 steps, $cont after 100 more"
# 100 more steps at a lower rate on this text: the model must keep what it
# learnt; 0.2 bits/char covers the restart's warm-up bump at 100 steps
check "init: continuing does not lose the start's training ($after -> $cont)" \
    python3 -c "import sys; sys.exit(0 if $cont <= $after + 0.2 else 1)"
sed 's/"steps": 100/"steps": 1000/' "$tmp/cont.json" > "$tmp/cont-long.json"
"$BIN" train -q --config "$tmp/cont-long.json" --data "$tmp/train.txt" -o "$tmp/u.safetensors" --threads 2 --stop-at 40
"$BIN" train -q --resume "$tmp/u.safetensors.ckpt" --data "$tmp/train.txt" -o "$tmp/u.safetensors" --threads 2 --stop-at 60
check "init: the start's record survives a checkpoint and resume" \
    test "$(trainrec "$tmp/u.safetensors" init.sha256)" = "\"$sha_a\""
python3 - "$tmp/u.safetensors.ckpt" "$tmp/old.ckpt" <<'PY'
# an init run's checkpoint as written before the record existed: no "init" in tflm.optim
import sys, struct, json
b = open(sys.argv[1], "rb").read()
n = struct.unpack("<Q", b[:8])[0]
h = json.loads(b[8:8 + n])
o = json.loads(h["__metadata__"]["tflm.optim"]); o.pop("init")
h["__metadata__"]["tflm.optim"] = json.dumps(o)
hb = json.dumps(h).encode()
open(sys.argv[2], "wb").write(struct.pack("<Q", len(hb)) + hb + b[8 + n:])
PY
"$BIN" train -q --resume "$tmp/old.ckpt" --data "$tmp/train.txt" -o "$tmp/w.safetensors" --stop-at 60
check "init: an older checkpoint without the record gets it back from the start file, checked by init_sha256" \
    sh -c "test '$(trainrec "$tmp/w.safetensors" init.sha256)' = '\"$sha_a\"' &&
           test '$(weights "$tmp/w.safetensors")' = '$(weights "$tmp/u.safetensors")'"
sed "s/$sha_a/$(echo "$sha_a" | tr 0-9a-f 1-9a-f0)/" "$tmp/cont.json" > "$tmp/cont-bad.json"
"$BIN" train -q --config "$tmp/cont-bad.json" --data "$tmp/train.txt" -o "$tmp/v.safetensors" 2> "$tmp/err.txt"; rc=$?
check "init: a start file whose sha256 is not init_sha256 is refused (exit $rc): $(head -c 120 "$tmp/err.txt")" \
    sh -c "test $rc -eq 2 && grep -q 'not the init_sha256' '$tmp/err.txt' && ! test -f '$tmp/v.safetensors'"

echo "1..$n"
[ $fail -eq 0 ]
