#!/usr/bin/env python3
"""model/profile_seeds.py: how much the generation profile varies with the seed.

`tflm layers --profile` measures one generation; issue 7's criterion is
stated for one (the default context and seed). This runs
  tflm layers --profile --json -m MODEL [-p PROMPT] -n N --seed S
for seeds 1..K and 1234 (the app's default seed), with the prompt and
without context, and prints a markdown table: the agreement of each state
h^(L)..h^(0) with the final text per seed, then the mean and the range
over the seeds.

Usage: python3 model/profile_seeds.py TFLM MODEL [--prompt TEXT] [-n N] [--seeds K]
"""
import argparse, json, subprocess

def profile(a, prompt, seed):
    cmd = [a.tflm, "layers", "--profile", "--json", "-m", a.model, "-n", str(a.n), "--seed", str(seed)]
    if prompt:
        cmd += ["-p", prompt]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out)["generation"]["agree"][::-1]      # h^(L) .. h^(0)

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("tflm"); ap.add_argument("model")
    ap.add_argument("--prompt", default="It is a truth universally")
    ap.add_argument("-n", type=int, default=120)
    ap.add_argument("--seeds", type=int, default=8)
    a = ap.parse_args()
    seeds = list(range(1, a.seeds + 1)) + [1234]
    for prompt in (a.prompt, ""):
        rows = [(s, profile(a, prompt, s)) for s in seeds]
        L = len(rows[0][1]) - 1
        what = 'after "%s"' % prompt if prompt else "without context"
        print("Generation %s, %d characters:\n" % (what, a.n))
        print("| seed | " + " | ".join("h^(%d)" % l for l in range(L, -1, -1)) + " |")
        print("|---:|" + "---:|" * (L + 1))
        for s, p in rows:
            print("| %d | " % s + " | ".join("%.1f %%" % (100 * x) for x in p) + " |")
        cols = list(zip(*[p for _, p in rows]))
        print("| mean | " + " | ".join("%.1f %%" % (100 * sum(c) / len(c)) for c in cols) + " |")
        print("| range | " + " | ".join("%.1f–%.1f" % (100 * min(c), 100 * max(c)) for c in cols) + " |")
        print()

if __name__ == "__main__":
    main()
