#!/bin/sh
# tests/test_app.sh: the interactive app (tflm ui), driven for real in a
# detached tmux server with its own socket: start, type a context, generate,
# rerun the same seed (same screen text), open every screen, step the replay,
# apply an edit and undo it, resize to 40x10 and back, save a session and
# reload it (same text), Ctrl-C does not quit, quit asks about unsaved edits;
# the refinement profile on Layers and Replay; a generation's text appearing
# block by block (slowed down with :set block-delay) and Ctrl-C cancelling it;
# switching models: T between default.safetensors and likelihood.safetensors
# (two different small models), :model FILE, and the errors that keep the
# current model (a missing file, a missing partner, unsaved edits asked about).
# Every step polls capture-pane until the expected text shows (with a
# timeout), never a fixed sleep. TAP output; skips without tmux.

TFLM=${TFLM_BIN:-./tflm}
if ! command -v tmux >/dev/null 2>&1; then
    echo "1..0 # SKIP tmux is not installed"
    exit 0
fi
if [ ! -x "$TFLM" ]; then
    echo "1..0 # SKIP no tflm binary at $TFLM (set TFLM_BIN)"
    exit 0
fi
SRC=${TFLM_SRCDIR:-.}
LC_ALL=C
LANG=C
export LC_ALL LANG
unset TFLM_MODEL TFLM_THREADS NO_COLOR
TFLM_NO_HISTORY=1
INPUTRC=/dev/null
export TFLM_NO_HISTORY INPUTRC

TMP=$(mktemp -d "${TMPDIR:-/tmp}/tflm-app.XXXXXX") || exit 1
SOCK=tflmtest-$$
T="tmux -L $SOCK -f /dev/null"
cleanup() {
    $T kill-server >/dev/null 2>&1
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

n=0
failed=0
ok() {      # ok STATUS DESCRIPTION
    n=$((n + 1))
    if [ "$1" -eq 0 ]; then
        echo "ok $n - $2"
    else
        echo "not ok $n - $2"
        failed=$((failed + 1))
        echo "# tmux sessions: $($T ls 2>&1 | tr '\n' ';')"
        echo "# screen:"
        $T capture-pane -p -t app 2>/dev/null | sed 's/^/#   /'
        [ -s "$TMP/err" ] && sed 's/^/# stderr: /' "$TMP/err"
    fi
}
screen() {
    $T capture-pane -p -t app 2>/dev/null
}
# wait_for TEXT [TENTHS]: poll until the screen shows TEXT (default 10 s)
wait_for() {
    i=0
    lim=${2:-100}
    while [ $i -lt "$lim" ]; do
        screen | grep -F -- "$1" >/dev/null 2>&1 && return 0
        sleep 0.1
        i=$((i + 1))
    done
    return 1
}
# wait_gone TEXT: poll until TEXT is no longer on the screen
wait_gone() {
    i=0
    while [ $i -lt 100 ]; do
        screen | grep -F -- "$1" >/dev/null 2>&1 || return 0
        sleep 0.1
        i=$((i + 1))
    done
    return 1
}
keys() {
    $T send-keys -t app "$@"
}
# the text area of the Generate screen (between the legend and the status line)
body() {
    screen | sed -n '3,27p'
}
MODEL=$TMP/m.safetensors
# A holder session keeps the tmux server alive between app sessions: killing
# the last session makes the server exit, and a new-session racing with that
# exit fails ("server exited unexpectedly"), which a loaded CI machine hit.
$T new-session -d -s holder -x 20 -y 5 "sleep 3600" >/dev/null 2>&1
start() {   # start ARGS...: the app on $MODEL in a fresh window named app
    $T kill-session -t app >/dev/null 2>&1
    i=0
    while $T has-session -t app >/dev/null 2>&1 && [ $i -lt 50 ]; do
        sleep 0.1
        i=$((i + 1))
    done
    for try in 1 2 3; do
        $T new-session -d -s app -x 100 -y 30 \
            "$TFLM ui -m '$MODEL' --no-history --color=never $* 2>'$TMP/err'; echo EXIT=\$?; sleep 30" \
            2>"$TMP/tmux-err" && $T has-session -t app >/dev/null 2>&1 && return 0
        echo "# tmux new-session failed (try $try): $(cat "$TMP/tmux-err")"
        sleep 0.5
    done
    return 1
}

# a small random model: generation is fast and deterministic
if ! "$TFLM" init --config "$SRC/tests/configs/tiny-mix1.json" --seed 7 -o "$TMP/m.safetensors" \
        >/dev/null 2>"$TMP/err"; then
    echo "1..0 # SKIP cannot make a test model: $(cat "$TMP/err")"
    exit 0
fi

echo "1..45"
start -n 40
wait_for "type a few words"
ok $? "the app starts on the Generate screen with a compose line"

keys "It was a" Enter
wait_for "generated 40 characters with seed 1"
ok $? "typing a context and Enter generates 40 characters"
screen | grep -F "It was a" >/dev/null
ok $? "the context is on the screen"
body >"$TMP/gen1"

keys M-s
wait_for "step 2/2"
body >"$TMP/gen2"
cmp -s "$TMP/gen1" "$TMP/gen2"
ok $? "the same seed again gives the same screen text"

keys M-n
wait_for "generated 40 characters with seed 2"
ok $? "Alt-n regenerates with a new seed"

keys M-u
wait_for "undone (step 2 of 3"
ok $? "Alt-u undoes the last generation"

keys F3
wait_for "top 5:"
screen | grep -E "^h3 (>|<) " >/dev/null && screen | grep -E "^h0 " >/dev/null
ok $? "F3 opens the Layers screen: rows h3..h0 and the inspector"
screen | grep -F "agree conf" >/dev/null && screen | grep -E "^h0 .* 100% [01]\.[0-9]{2}$" >/dev/null &&
    screen | grep -E "^h3 (>|<) .* [0-9]+% [01]\.[0-9]{2}$" >/dev/null
ok $? "the Layers screen shows the refinement profile per row, 100% at h0"

keys Up Up
wait_for " h2 < (flow 2, mix1 flip)"
ok $? "the Layers cursor moves up to a flow layer and the inspector follows"

keys Tab
wait_for "metric: confidence"
ok $? "Tab opens the Heatmap screen with its legend"
keys m
wait_for "metric: entropy"
ok $? "m cycles the heatmap metric"

keys F5
wait_for "step 1/"
ok $? "F5 opens the Replay screen"
keys . .
wait_for "step 3/"
ok $? "the replay steps forward"
keys d
wait_for "Dissolve (forward pass)"
ok $? "d switches to the dissolve"
screen | grep -E "^h0 .* 100% [01]\.[0-9]{2}$" >/dev/null
ok $? "the dissolve shows the profile of the rows it has completed"

keys F6
wait_for "op noise"
ok $? "F6 opens the Edit screen"
keys Home v Right Right Right 3 Enter
wait_for "edit applied at layer 3"
ok $? "selecting a span and Enter applies an edit"
screen | grep -F "before:" >/dev/null && screen | grep -F "after (" >/dev/null
ok $? "the edit shows before and after"
keys u
wait_for "undone (step 2 of 3"
ok $? "u undoes the edit"

$T resize-window -t app -x 40 -y 10 >/dev/null 2>&1
wait_for "Terminal too small: 40x10"
ok $? "a 40x10 terminal shows one clear message"
$T resize-window -t app -x 100 -y 30 >/dev/null 2>&1
wait_for "1 Generate  2 Layers"
ok $? "back at 100x30 the screen is drawn again"

keys C-c
wait_for "Ctrl-C cancels"
ok $? "Ctrl-C does not quit"

keys F2
wait_for "type a new context"
body >"$TMP/before_save"
keys ":save $TMP/s.json" Enter
wait_for "saved $TMP/s.json"
ok $? ":save writes a session file"

keys F6
wait_for "op noise"
keys End v Left Left Enter
wait_for "edit applied"
keys q
wait_for "Unsaved edits. Quit anyway?"
ok $? "q asks first when edits are unsaved"
keys y
wait_for "EXIT=0"
ok $? "y quits with status 0 and the terminal restored"

start -n 40 --load "'$TMP/s.json'"
wait_for "loaded $TMP/s.json"
body >"$TMP/after_load"
cmp -s "$TMP/before_save" "$TMP/after_load"
ok $? "loading the session shows the same text"

# the text appears block by block: slow the blocks down to see it happen
keys ":set block-delay 150" Enter
wait_for "block-delay = 150"
keys M-n
wait_for "of 40 new characters"
ok $? "a running generation reports its blocks on the Generate screen"
got=1
i=0
while [ $i -lt 60 ]; do
    screen >"$TMP/live"
    m=$(sed -n 's/.*generating: \([0-9]*\) of 40 new characters.*/\1/p' "$TMP/live" | head -n 1)
    if [ -n "$m" ] && [ "$m" -gt 0 ] && [ "$m" -lt 40 ]; then
        got=0
        break
    fi
    sleep 0.1
    i=$((i + 1))
done
ok $got "part of the new text is on the screen before the generation ends ($m of 40)"
partial=$(sed -n 4p "$TMP/live")
wait_for "generated 40 characters with seed"
final=$(screen | sed -n 4p)
[ -n "$partial" ] && [ "${final#"$partial"}" != "$final" ]
r=$?
[ $r -eq 0 ] || echo "# partial: '$partial'  final: '$final'"
ok $r "the text shown while generating is the start of the final text"
keys M-n
wait_for "of 40 new characters"
keys C-c
wait_for "generate: cancelled"
ok $? "Ctrl-C cancels a running generation"
keys C-d
wait_for "EXIT=0"
ok $? "Ctrl-D on an empty compose line quits with status 0"

# ---- switching models ----------------------------------------------------------
# two different small models named like the shipped pair
mkdir "$TMP/ship" &&
    "$TFLM" init --config "$SRC/tests/configs/tiny-mix1.json" --seed 7 \
        -o "$TMP/ship/default.safetensors" >/dev/null 2>"$TMP/err" &&
    "$TFLM" init --config "$SRC/tests/configs/tiny-affine.json" --seed 3 \
        -o "$TMP/ship/likelihood.safetensors" >/dev/null 2>"$TMP/err"
ok $? "two small models as default.safetensors and likelihood.safetensors"
MODEL=$TMP/ship/default.safetensors
start -n 40
wait_for " default.safetensors, 3 flows"
ok $? "the title names the model file"
keys "It was a" Enter
wait_for "generated 40 characters with seed 1"
body >"$TMP/teach"
keys F3
wait_for "top 5:"
keys T
wait_for "model: likelihood.safetensors (3 flows, affine"
ok $? "T switches to likelihood.safetensors and says so"
screen | sed -n 1p | grep -F " likelihood.safetensors, 3 flows" >/dev/null &&
    screen | grep -F "step 0/0" >/dev/null && screen | grep -F "No text yet" >/dev/null
ok $? "the title names the new model; the old model's text and layers are gone"
keys F2
wait_for "> It was a"
ok $? "the last context waits on the compose line"
keys Enter
wait_for "generated 40 characters with seed 1"
r=$?
body >"$TMP/like"
[ $r -eq 0 ] && ! cmp -s "$TMP/teach" "$TMP/like"
ok $? "the other model generates (another text for the same context and seed)"
keys M-T
wait_for "model: default.safetensors (3 flows, mix1"
ok $? "Alt-T on the Generate screen switches back"
keys C-c ":model $TMP/nonexistent" Enter
wait_for "nonexistent: No such file or directory"
r=$?
screen | sed -n 1p | grep -F " default.safetensors, 3 flows" >/dev/null
ok $((r + $?)) ":model with a missing file is an error and keeps the model"
keys "It was" Enter
wait_for "generated 40 characters with seed 1"
ok $? "the app keeps working after the failed switch"
keys ":m $TMP/ship/likelihood.safetensors" Enter
wait_for "model: likelihood.safetensors"
ok $? ":m FILE loads a model file"
keys C-c "It was a" Enter
wait_for "generated 40 characters"
keys F6
wait_for "op noise"
keys Home v Right Right 3 Enter
wait_for "edit applied"
keys T
wait_for "Switch the model anyway? (y/n)"
ok $? "with unsaved edits T asks first"
keys n
wait_for "model unchanged"
r=$?
screen | sed -n 1p | grep -F " likelihood.safetensors, 3 flows" >/dev/null
ok $((r + $?)) "n keeps the model"
rm -f "$TMP/ship/default.safetensors"
keys T
wait_for "cannot switch: no default.safetensors in $TMP/ship"
r=$?
screen | sed -n 1p | grep -F " likelihood.safetensors, 3 flows" >/dev/null
ok $((r + $?)) "T without the partner file is an error and keeps the model"
keys q
wait_for "Unsaved edits. Quit anyway?"
keys y
wait_for "EXIT=0"
ok $? "the app quits normally after switching models"

[ $failed -eq 0 ]
