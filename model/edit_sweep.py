#!/usr/bin/env python3
"""model/edit_sweep.py: how much an edit at each layer changes the text.

For each layer l = 1..L, each of W windows of real text (120 characters cut
from novels-valid.txt at fixed offsets) and each seed, run
  tflm edit --layer l --span A:B --op noise:S --seed SEED [--local] TEXT
and count the characters of the result that differ from the input: inside
the span, inside the span's flip block(s) and in the whole window. Prints
a markdown table of the means (the rows of model/RESULTS.md). With
--relative the noise scale at layer l is S times the root mean square of
that window's state h^(l) (tflm encode --mean --json), since the states'
spreads differ a lot between layers.

Usage: python3 model/edit_sweep.py TFLM MODEL VALID.txt [--scale S]
       [--windows W] [--seeds N] [--span A:B] [--local]
"""
import argparse, json, subprocess, sys

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("tflm"); ap.add_argument("model"); ap.add_argument("valid")
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--windows", type=int, default=5)
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--span", default="48:56")
    ap.add_argument("--local", action="store_true")
    ap.add_argument("--relative", action="store_true")
    a = ap.parse_args()
    info = json.loads(subprocess.run([a.tflm, "info", "--json", "-m", a.model], check=True,
                                     capture_output=True, text=True).stdout)
    cfg = info.get("config", info)
    L = len(cfg["flows"])
    B = cfg.get("flip_block", 16) * cfg.get("patch", 1)
    text = open(a.valid, encoding="utf-8").read()
    s0, s1 = map(int, a.span.split(":"))
    b0, b1 = (s0 // B) * B, -(-s1 // B) * B
    wins = []
    for w in range(a.windows):
        off = 1000 + w * (len(text) - 2000) // a.windows
        off = text.index("\n", off) + 1          # start at a line start
        wins.append(text[off:off + 120])
    rms = []
    for w in wins:
        r = [1.0] * (L + 1)
        if a.relative:
            enc = json.loads(subprocess.run([a.tflm, "encode", "--mean", "--json", "-m", a.model, "-"],
                                            input=w, check=True, capture_output=True, text=True).stdout)
            for l, st in enumerate(enc["states"]):
                v = [x for row in st for x in row]
                r[l] = (sum(x * x for x in v) / len(v)) ** 0.5
        rms.append(r)
    print("| layer | changed in span (%d) | in span's blocks (%d) | in window (120) |" % (s1 - s0, b1 - b0))
    print("|---:|---:|---:|---:|")
    for l in range(1, L + 1):
        tot = [0.0, 0.0, 0.0]; n = 0
        for wi, w in enumerate(wins):
            for seed in range(1, a.seeds + 1):
                cmd = [a.tflm, "edit", "-m", a.model, "--layer", str(l), "--span", a.span,
                       "--op", "noise:%.6g" % (a.scale * rms[wi][l]), "--seed", str(seed)]
                if a.local: cmd.append("--local")
                out = subprocess.run(cmd + ["--", w], check=True, capture_output=True,
                                     text=True).stdout
                if out.endswith("\n"):
                    out = out[:-1]                   # the line end tflm edit adds
                if len(out) != len(w):
                    sys.exit("edit_sweep: output length %d != %d" % (len(out), len(w)))
                diff = [x != y for x, y in zip(out, w)]
                tot[0] += sum(diff[s0:s1]); tot[1] += sum(diff[b0:b1]); tot[2] += sum(diff); n += 1
        print("| %d | %.2f | %.2f | %.2f |" % (l, tot[0] / n, tot[1] / n, tot[2] / n))

if __name__ == "__main__":
    main()
