#!/bin/sh
# bench/gpu-bundle.sh: build the CUDA binaries on this machine (x86-64 with
# the CUDA toolkit 13, no GPU needed) and pack them for bench/gpu.sh into
# bench/gpu-bundle.tar.gz: tests/test_cuda, bench/bench_gpu, tflm with
# libtflm.so, the default model, and the shared libraries they need that a
# CUDA image may lack (jansson, OpenBLAS and its Fortran runtime, libgomp,
# ncursesw, readline). libcudart and libcublas come from the GPU machine.
# The tarball is ignored by git (.git/info/exclude); a session with a GPU
# carries it: run(command="sh bench/gpu.sh", carry=["bench/gpu-bundle.tar.gz"]).
#
# Builds in $TMPDIR/tflm-bundle from a copy of the working tree (tracked and
# untracked files that git does not ignore), so the tree's own build is not
# touched. JOBS (default 1) make jobs; everything runs under nice.
set -e
src=$(cd "$(dirname "$0")/.." && pwd)
work=${TMPDIR:-/tmp}/tflm-bundle
jobs=${JOBS:-1}
rm -rf "$work"
mkdir -p "$work/src" "$work/build" "$work/pack/bin" "$work/pack/lib" "$work/pack/model"
(cd "$src" && git ls-files -co --exclude-standard -z | xargs -0 cp --parents -t "$work/src")
cd "$work/src"
nice -n 19 ./autogen.sh >"$work/autogen.log" 2>&1
cd "$work/build"
nice -n 19 "$work/src/configure" --with-cuda --quiet
nice -n 19 make -j"$jobs" >"$work/make.log" 2>&1 || { tail -30 "$work/make.log"; exit 1; }
nice -n 19 make -j"$jobs" tests/test_cuda bench/bench_gpu >>"$work/make.log" 2>&1 ||
    { tail -30 "$work/make.log"; exit 1; }
p=$work/pack
cp tests/test_cuda bench/bench_gpu .libs/tflm "$p/bin/"
cp -L .libs/libtflm.so.0 "$p/lib/"
cp model/default.safetensors "$p/model/"
# the non-CUDA, non-C-library shared libraries the binaries load
for f in $(ldd "$p/bin/test_cuda" "$p/bin/bench_gpu" .libs/tflm 2>/dev/null |
           awk '$2 == "=>" && $3 ~ /^\// {print $3}' | sort -u); do
    case $(basename "$f") in
    libc.so*|libm.so*|libpthread*|libdl.so*|librt.so*|ld-linux*|libstdc++*|libgcc_s*) ;;
    libcuda*|libcublas*|libcudart*|libtflm*) ;;
    *) cp -L "$f" "$p/lib/" ;;
    esac
done
{
    echo "built $(date -u '+%Y-%m-%d %H:%M UTC') from $(git -C "$src" rev-parse --short HEAD)$(git -C "$src" diff --quiet HEAD 2>/dev/null || echo '+changes') on $(uname -m)"
    /usr/local/cuda/bin/nvcc --version 2>/dev/null | tail -1
    gcc --version | head -1
    ldd --version | head -1
    grep TFLM_CUDA_GENCODE "$work/build/config.h" || true
} > "$p/BUILD-INFO"
tar czf "$src/bench/gpu-bundle.tar.gz" -C "$p" .
ex=$(git -C "$src" rev-parse --git-path info/exclude)
case $ex in /*) ;; *) ex=$src/$ex ;; esac
grep -qx '/bench/gpu-bundle.tar.gz' "$ex" 2>/dev/null || echo '/bench/gpu-bundle.tar.gz' >>"$ex"
ls -la "$src/bench/gpu-bundle.tar.gz"
cat "$p/BUILD-INFO"
ls "$p/lib"
