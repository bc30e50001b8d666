#!/bin/sh
# bench/run.sh: what `make bench` runs. Benchmarks are never part of make check.
set -e
b=${BENCH_DIR:-bench}
# OpenBLAS 0.3.21 misdetects recent Intel CPUs (see ui/main.c); choose its core
if [ -z "${OPENBLAS_CORETYPE:-}" ]; then
    if grep -q avx512f /proc/cpuinfo 2>/dev/null; then export OPENBLAS_CORETYPE=SkylakeX
    elif grep -q avx2 /proc/cpuinfo 2>/dev/null; then export OPENBLAS_CORETYPE=Haswell; fi
fi
echo "OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-auto}"
echo "== generation: flow (4 flows) vs ar, same width and depth, one core"
"$b/bench_gen" 1 256
echo
echo "== training: ~2 M-parameter flow vs ar, 2 threads"
"$b/bench_train" 2 8
