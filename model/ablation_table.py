#!/usr/bin/env python3
"""model/ablation_table.py OUTDIR [ROW...]: the ablation table of
model/RESULTS.md from what model/ablations.sh left in OUTDIR."""
import re, json, os, sys

def fmt_prof(p):
    return " · ".join("%d" % round(100 * a) for a in reversed(p["agree"]))

out = sys.argv[1]
rows = sys.argv[2:] or sorted(f[:-len(".valid.json")] for f in os.listdir(out) if f.endswith(".valid.json"))
print("| row | flows (data → noise) | P | valid bits/char | moby bits/char | profile gen. h^(L)…h^(0) % | profile encoded % | train wall |")
print("|---|---|---:|---:|---:|---|---|---:|")
for r in rows:
    cfg = json.load(open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "recipes/ablations", r + ".json")))
    m = cfg["model"]
    fl = []
    for f in m["flows"]:
        s = f["type"]
        if f["type"] == "mix1": s += " K%d" % f["mixtures"]
        if f.get("maf"):
            h = f["maf"]["hidden"]
            s += "+maf" if h == 32 else "+maf H%d" % h    # 32: the shipped width
        s += " (%d)" % f["layers"]
        fl.append(s)
    if cfg.get("sigma_floor"): fl[-1] += ", σ ≥ %g" % cfg["sigma_floor"]
    sched = cfg.get("schedule", "joint")
    if sched == "progressive": sched += " " + "/".join(map(str, cfg["stage_steps"]))
    v = json.load(open(os.path.join(out, r + ".valid.json")))["total"]["bpc"]
    mo = json.load(open(os.path.join(out, r + ".moby.json")))["total"]["bpc"]
    try:
        p = json.load(open(os.path.join(out, r + ".profile.json")))
        pg, pe = fmt_prof(p["generation"]), fmt_prof(p["encoded"])
    except Exception:
        pg = pe = "–"
    t = "–"
    logf = os.path.join(out, r + ".safetensors.log")
    if os.path.exists(logf):
        for line in open(logf):
            done = re.search(r" done: .*?([0-9.]+ min)", line)
            if done:
                t = done.group(1)                   # the run's own wall time
    print("| %s | %s, %s | %d | %.4f | %.4f | %s | %s | %s |" % (r, " → ".join(fl), sched, m["patch"], v, mo, pg, pe, t))
