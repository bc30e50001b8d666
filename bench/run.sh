#!/bin/sh
# bench/run.sh: what `make bench` runs. Benchmarks are never part of make check.
set -e
b=${BENCH_DIR:-bench}
echo "== generation: flow (4 flows) vs ar, same width and depth, one core"
"$b/bench_gen" 1 256
