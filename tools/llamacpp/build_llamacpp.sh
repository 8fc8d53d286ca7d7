#!/usr/bin/env bash
# Build llama.cpp (CPU only, Release, -DGGML_NATIVE=ON) for comparisons and reference outputs.
#
# Dev tooling only: llama.cpp is never committed.  Its source comes from the llama-cpp-python
# sdist (which vendors ggml-org/llama.cpp), fetched with pip, the same pin as tools/fixtures/make_fixtures.py.
#
#   tools/llamacpp/build_llamacpp.sh                 # -> prints the directory holding llama-cli, llama-bench, ...
#   LLAMA_CPP_DIR=/path/to/llama.cpp tools/llamacpp/build_llamacpp.sh   # build an existing checkout instead
#
# Environment: LLAMA_WORK (default target/llamacpp in the repository: sdist, unpacked source,
# build/), LLAMA_BUILD_DIR (default $LLAMA_WORK/build), LLAMA_JOBS (default 2), PIP (default: the
# active virtualenv's pip, else pip3).
# llama-cli is only built with -DLLAMA_BUILD_SERVER=ON in this llama.cpp version (it shares the
# server's code); it is left out (reference outputs come from tools/llamacpp/llamacpp_greedy.cpp).
# Idempotent: the download, the unpack and the configure step are skipped when already done;
# the build step is incremental.  Everything but the final directory goes to stderr.
set -euo pipefail

VERSION=0.3.36
REPO=$(cd "$(dirname "$0")/../.." && pwd)
WORK=${LLAMA_WORK:-$REPO/target/llamacpp}
BUILD=${LLAMA_BUILD_DIR:-$WORK/build}
JOBS=${LLAMA_JOBS:-2}
if [[ -z "${PIP:-}" ]]; then
  if [[ -n "${VIRTUAL_ENV:-}" && -x $VIRTUAL_ENV/bin/pip ]]; then PIP=$VIRTUAL_ENV/bin/pip; else PIP=pip3; fi
fi

mkdir -p "$WORK"
if [[ -z "${LLAMA_CPP_DIR:-}" ]]; then
  sdist="$WORK/llama_cpp_python-$VERSION.tar.gz"
  if [[ ! -f "$sdist" ]]; then
    echo "downloading llama-cpp-python==$VERSION sdist" >&2
    "$PIP" download --no-deps --no-binary llama-cpp-python "llama-cpp-python==$VERSION" -d "$WORK" >&2
  fi
  src_root="$WORK/llama_cpp_python-$VERSION"
  if [[ ! -f "$src_root/vendor/llama.cpp/CMakeLists.txt" ]]; then
    echo "unpacking $sdist" >&2
    tar xzf "$sdist" -C "$WORK"
  fi
  LLAMA_CPP_DIR="$src_root/vendor/llama.cpp"
fi
[[ -f "$LLAMA_CPP_DIR/CMakeLists.txt" ]] || { echo "no llama.cpp source in $LLAMA_CPP_DIR" >&2; exit 1; }

if [[ ! -f "$BUILD/CMakeCache.txt" ]]; then
  echo "configuring $LLAMA_CPP_DIR -> $BUILD" >&2
  cmake -S "$LLAMA_CPP_DIR" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON \
    -DGGML_CUDA=OFF -DGGML_METAL=OFF -DGGML_VULKAN=OFF -DGGML_OPENMP=ON \
    -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=OFF -DBUILD_SHARED_LIBS=OFF >&2
fi

# Build whichever of the wanted tools this llama.cpp version has.
available=$(cmake --build "$BUILD" --target help 2>/dev/null | sed -n 's/^\.\.\. \([^ ]*\).*/\1/p')
targets=()
for t in llama-cli llama-simple llama-bench llama-quantize llama-perplexity; do
  if grep -qx "$t" <<<"$available"; then targets+=("$t"); else echo "target $t not available, skipped" >&2; fi
done
echo "building ${targets[*]} with -j$JOBS" >&2
nice cmake --build "$BUILD" --config Release -j "$JOBS" --target "${targets[@]}" >&2

bindir="$BUILD/bin"
[[ -x "$bindir/llama-quantize" ]] || { echo "build produced no $bindir/llama-quantize" >&2; exit 1; }
echo "$bindir"
