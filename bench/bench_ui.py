#!/usr/bin/env python3
# bench_ui.py: keypress-to-redraw latency of the app (tflm ui). Runs the app
# on a pseudo-terminal (120x40), generates a 256-character text with a
# 4-flow model, opens the Layers screen and moves the cursor: for each key,
# the time from writing the key to the last byte of the redraw (output
# quiet for 30 ms afterwards). The target is under 50 ms.
# Usage: bench/bench_ui.py [TFLM_BINARY] [MODEL]   (run by hand, not by make check)
import os, pty, select, struct, sys, tempfile, time, fcntl, termios, subprocess, statistics

tflm = sys.argv[1] if len(sys.argv) > 1 else "./tflm"
tmp = tempfile.mkdtemp(prefix="tflm-bench-ui.")
model = sys.argv[2] if len(sys.argv) > 2 else None
if not model:
    cfg = os.path.join(tmp, "four.json")
    with open(cfg, "w") as f:
        f.write('{"format": "tflm", "version": 1, "vocab_size": 97, "latent_dim": 8, "patch": 1, '
                '"window": 256, "d_model": 64, "n_heads": 4, "flip_block": 16, "ln_eps": 1e-05, '
                '"flows": [{"type": "mixd", "layers": 1, "direction": "l2r"}, '
                '{"type": "mix1", "layers": 1, "mixtures": 4, "direction": "flip"}, '
                '{"type": "mix1", "layers": 1, "mixtures": 4, "direction": "l2r"}, '
                '{"type": "mix1", "layers": 1, "mixtures": 4, "direction": "flip"}]}')
    model = os.path.join(tmp, "four.safetensors")
    subprocess.run([tflm, "init", "--config", cfg, "-o", model], check=True,
                   stdout=subprocess.DEVNULL)

pid, fd = pty.fork()
if pid == 0:
    os.environ["TERM"] = "xterm-256color"
    os.environ["TFLM_NO_HISTORY"] = "1"
    os.execv(tflm if "/" in tflm else "./" + tflm,
             [tflm, "ui", "-m", model, "-n", "240", "-p", "It is a truth", "--no-mouse"])
fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))

buf = b""
def drain(quiet_ms, limit_s=30.0):
    """read until the output is quiet for quiet_ms; returns the time of the last byte"""
    global buf
    last = time.monotonic()
    end = last + limit_s
    while time.monotonic() < end:
        r, _, _ = select.select([fd], [], [], quiet_ms / 1000.0)
        if not r:
            return last
        try:
            data = os.read(fd, 65536)
        except OSError:
            return last
        if not data:
            return last
        buf += data
        last = time.monotonic()
    return last

t0 = time.monotonic()
while b" characters with seed" not in buf and time.monotonic() - t0 < 60:
    drain(50, 1.0)
if b" characters with seed" not in buf:
    print("the app did not generate a text:", buf[-400:], file=sys.stderr)
    sys.exit(1)
drain(100)
os.write(fd, b"\x1bOR")        # F3: the Layers screen
drain(100)
lat = []
for i in range(60):
    # right x10, left x10, ... (application cursor keys: keypad mode is on)
    key = b"\x1bOC" if (i // 10) % 2 == 0 else b"\x1bOD"
    t = time.monotonic()
    os.write(fd, key)
    n0 = len(buf)
    last = drain(30)
    if len(buf) == n0:
        print("no redraw after a key", file=sys.stderr)
        sys.exit(1)
    lat.append((last - t) * 1000)
os.write(fd, b"q")
drain(100, 2.0)
try:
    os.kill(pid, 15)
except OSError:
    pass
os.waitpid(pid, 0)
lat.sort()
print("keypress to redraw on the Layers screen, 256 characters, 4 flows, 120x40:")
print("  median %.2f ms   p90 %.2f ms   max %.2f ms   (%d keys; target < 50 ms)" %
      (statistics.median(lat), lat[int(len(lat) * 0.9)], lat[-1], len(lat)))
