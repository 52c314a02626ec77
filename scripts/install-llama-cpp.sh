#!/usr/bin/env bash
# Build llama-cpp-python portably and install it into a Python environment.
#
# Usage: scripts/install-llama-cpp.sh PYTHON          (e.g. .venv/bin/python)
#
# Why: llama.cpp's default build (GGML_NATIVE=ON) compiles for the CPU it is built on, AMX and
# AVX-512 included; on a machine (or VM) that lacks or traps them, the judge dies with
# "Illegal instruction" at its first long prompt. This script builds for a stated baseline:
#   x86_64 with AVX2: AVX, AVX2, FMA, F16C; no -march=native, no AVX-512, no AMX
#   x86_64 without AVX2: the generic x86-64 baseline (SSE only; slower)
#   aarch64 and others: GGML_NATIVE=OFF, the architecture's generic baseline (NEON on aarch64)
# The wheel goes into a folder keyed by (version, build flags, Python tag, platform), so a wheel
# built with other flags (pip's own wheel cache, an earlier native build) is never reused:
#   ${ASSAY_WHEELHOUSE:-~/.cache/assay/wheels}/llama-cpp-python-VERSION-KEY/
# Override the flags with LLAMA_CMAKE_ARGS (they become part of the key). Prints the build time.
set -euo pipefail

PY="${1:?usage: $0 PYTHON}"
VERSION="${LLAMA_CPP_VERSION:-0.3.36}"
ARCH="$(uname -m)"
if [ -n "${LLAMA_CMAKE_ARGS:-}" ]; then
  FLAGS="$LLAMA_CMAKE_ARGS"
elif [ "$ARCH" = x86_64 ] && grep -qw avx2 /proc/cpuinfo 2>/dev/null; then
  FLAGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=OFF"
  FLAGS="$FLAGS -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF -DGGML_BMI2=OFF"
else
  FLAGS="-DGGML_NATIVE=OFF"
fi
FLAGS="$FLAGS -DLLAVA_BUILD=OFF"   # the multimodal helper library: assay never loads it
TAG="$("$PY" -c 'import sys, sysconfig; print(sys.implementation.cache_tag, sysconfig.get_platform())')"
KEY="$(printf '%s\n%s\n%s\n' "$VERSION" "$FLAGS" "$TAG" | sha256sum | cut -c1-12)"
HOUSE="${ASSAY_WHEELHOUSE:-${XDG_CACHE_HOME:-$HOME/.cache}/assay/wheels}/llama-cpp-python-$VERSION-$KEY"

if ! ls "$HOUSE"/llama_cpp_python-"$VERSION"-*.whl >/dev/null 2>&1; then
  echo "building llama-cpp-python $VERSION for $ARCH ($FLAGS); about 5 minutes on 2 cores" >&2
  tmp="$(mktemp -d)"
  start=$(date +%s)
  # --no-cache-dir: pip's wheel cache is keyed by the source only, not by CMAKE_ARGS.
  CMAKE_ARGS="$FLAGS" CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" \
    "$PY" -m pip wheel --quiet --no-cache-dir --no-deps --no-binary llama-cpp-python \
    "llama-cpp-python==$VERSION" -w "$tmp"
  mkdir -p "$HOUSE"
  mv "$tmp"/llama_cpp_python-*.whl "$HOUSE"/
  rmdir "$tmp"
  printf 'version=%s\nflags=%s\ntag=%s\nbuilt=%s\nbuild_s=%s\n' "$VERSION" "$FLAGS" "$TAG" \
    "$(date -u +%FT%TZ)" "$(( $(date +%s) - start ))" > "$HOUSE/BUILD-INFO"
  echo "built in $(( $(date +%s) - start )) s -> $HOUSE" >&2
fi
# --no-index: only the wheel of this key can satisfy it, never a source build with other flags.
"$PY" -m pip install --quiet --no-deps --force-reinstall --no-index --find-links "$HOUSE" \
  "llama-cpp-python==$VERSION"
cp "$HOUSE/BUILD-INFO" "$("$PY" -c 'import sys; print(sys.prefix)')/llama-cpp-build-info.txt"
