#!/bin/sh
# bench/gpu.sh: the CUDA backend on a machine with an NVIDIA GPU, in one run
# of a few minutes: get the CUDA binaries, run the op-by-op parity tests
# (tests/test_cuda), a CLI check (tflm generate --device cuda against
# --device cpu), and time a training step and a 256-character generation
# for the default model's shape and one about 10x larger, on the GPU and on
# the CPU (bench/bench_gpu). Everything goes to $OUT/gpu-results.txt, or to
# bench/gpu-results.txt when OUT is unset.
#
# The binaries come from one of:
#  1. bench/gpu-bundle.tar.gz, made beforehand on any x86-64 machine with the
#     CUDA toolkit by bench/gpu-bundle.sh (binaries plus the non-CUDA shared
#     libraries they need; the GPU machine supplies libcudart/libcublas 13);
#  2. a build here: ./autogen.sh (when configure is missing),
#     ./configure --with-cuda, make -j16 (needs autotools, jansson, ncursesw,
#     readline and OpenBLAS headers on the machine).
# The first is tried first; if its binaries do not start, the second.
# Each stage has its own time limit; the whole run stays under 8 minutes.
set -u
here=$(cd "$(dirname "$0")/.." && pwd)
out=${OUT:-$here/bench}
mkdir -p "$out"
res=$out/gpu-results.txt
: > "$res"
t0=$(date +%s)
say() { printf '%s\n' "$*" | tee -a "$res"; }
elapsed() { echo $(( $(date +%s) - t0 )); }
ncpu=$(nproc 2>/dev/null || echo 4)
jobs=${JOBS:-$ncpu}

say "# tflm bench/gpu.sh, $(date -u '+%Y-%m-%d %H:%M:%S UTC'), $(uname -m), $ncpu CPUs"
say "# commit: $(git -C "$here" rev-parse --short HEAD 2>/dev/null || echo unknown)"
if command -v nvidia-smi >/dev/null 2>&1; then
    say "# GPU: $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | head -1)"
else
    say "# GPU: nvidia-smi not found"
fi
say "# CPU: $(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | sed 's/.*: //')"

# OpenBLAS 0.3.21 misdetects recent CPUs (bench/run.sh, ui/main.c): choose its core
if [ -z "${OPENBLAS_CORETYPE:-}" ]; then
    if grep -q avx512f /proc/cpuinfo 2>/dev/null; then export OPENBLAS_CORETYPE=SkylakeX
    elif grep -q avx2 /proc/cpuinfo 2>/dev/null; then export OPENBLAS_CORETYPE=Haswell; fi
fi

# the CUDA runtime and cuBLAS of this machine, when they are not where the
# binaries look (/usr/local/cuda/lib64)
cuda_libs() {
    for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib; do
        [ -e "$d/libcublas.so.13" ] && { echo "$d"; return; }
    done
    f=$(find /usr /opt -name 'libcublas.so.13' 2>/dev/null | head -1)
    [ -n "$f" ] && dirname "$f"
}
cl=$(cuda_libs)
if [ -n "$cl" ]; then
    rt=$(find "$cl" "$cl/.." /usr/local/cuda /opt -name 'libcudart.so.13' 2>/dev/null | head -1)
    export LD_LIBRARY_PATH="$cl${rt:+:$(dirname "$rt")}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
say "# CUDA libraries: ${cl:-not found (libcublas.so.13)}"

# ---- 1. binaries ---------------------------------------------------------------
B=
bundle=$here/bench/gpu-bundle.tar.gz
if [ -f "$bundle" ]; then
    rm -rf /tmp/tflm-gpu && mkdir -p /tmp/tflm-gpu && tar xzf "$bundle" -C /tmp/tflm-gpu
    export LD_LIBRARY_PATH="/tmp/tflm-gpu/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    if /tmp/tflm-gpu/bin/tflm --version >/dev/null 2>&1 &&
       ! ldd /tmp/tflm-gpu/bin/test_cuda /tmp/tflm-gpu/bin/bench_gpu 2>&1 | grep -q 'not found'; then
        B=/tmp/tflm-gpu/bin
        model=/tmp/tflm-gpu/model/default.safetensors
        say "# binaries: bench/gpu-bundle.tar.gz ($(cat /tmp/tflm-gpu/BUILD-INFO 2>/dev/null | head -1))"
    else
        say "# bench/gpu-bundle.tar.gz: its binaries do not start here:"
        ldd /tmp/tflm-gpu/bin/test_cuda 2>&1 | grep 'not found' | tee -a "$res"
        /tmp/tflm-gpu/bin/tflm --version 2>&1 | tail -3 | tee -a "$res"
    fi
fi
if [ -z "$B" ]; then
    say "# binaries: building here with CUDA (t=$(elapsed) s)"
    build=/tmp/tflm-gpu-build
    rm -rf "$build" && mkdir -p "$build"
    (
        set -e
        cd "$here"
        [ -x configure ] || ./autogen.sh
        cd "$build"
        "$here/configure" --with-cuda --quiet
        timeout 300 make -j"$jobs" >make.log 2>&1 || { tail -30 make.log; exit 1; }
        make -j"$jobs" tests/test_cuda bench/bench_gpu >>make.log 2>&1 || { tail -30 make.log; exit 1; }
    ) 2>&1 | tail -40 | tee -a "$res"
    if [ -x "$build/tests/test_cuda" ] && [ -x "$build/bench/bench_gpu" ]; then
        mkdir -p "$build/bin"
        ln -sf ../tests/test_cuda ../bench/bench_gpu ../tflm "$build/bin/"
        B=$build/bin
        model=$build/model/default.safetensors
        say "# built in $(elapsed) s"
    else
        say "# FAILED: no CUDA build (see above)"
        exit 1
    fi
fi

# ---- 2. op-by-op parity ---------------------------------------------------------
say ""
say "## parity: tests/test_cuda (t=$(elapsed) s)"
timeout 180 "$B/test_cuda" > /tmp/tflm-test-cuda.log 2>&1
rc=$?
cat /tmp/tflm-test-cuda.log >> "$res"
nok=$(grep -c '^ok ' /tmp/tflm-test-cuda.log)
nbad=$(grep -c '^not ok ' /tmp/tflm-test-cuda.log)
say "## parity: $nok ok, $nbad not ok, exit $rc"
grep '^not ok \|SKIP' /tmp/tflm-test-cuda.log | head -20

# ---- 3. the command line ------------------------------------------------------------
say ""
say "## tflm generate -n 128 --seed 1, --device cpu vs --device cuda (t=$(elapsed) s)"
a=$(timeout 60 "$B/tflm" generate -m "$model" -n 128 --seed 1 --device cpu 2>&1)
b=$(timeout 60 "$B/tflm" generate -m "$model" -n 128 --seed 1 --device cuda 2>&1)
say "cpu:  $(printf '%s' "$a" | tr '\n' '|')"
say "cuda: $(printf '%s' "$b" | tr '\n' '|')"
[ "$a" = "$b" ] && say "## same text" || say "## texts differ"

# ---- 4. timings ----------------------------------------------------------------------
say ""
say "## timings: bench_gpu $ncpu threads (t=$(elapsed) s)"
# TFLM_GPU_BENCH_ARGS: bench_gpu's [threads] [cpu_steps] [gpu_steps] [sizes]
timeout 330 "$B/bench_gpu" ${TFLM_GPU_BENCH_ARGS:-$ncpu 3 10} 2>&1 | tee -a "$res"
say ""
say "# total $(elapsed) s"
