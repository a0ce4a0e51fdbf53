#!/usr/bin/env bash
# Sets up gsq on a fresh Debian 12: installs the apt packages it needs (idempotent),
# then configures a Release build in ./build and builds everything (tests, benches,
# examples). Needs root or sudo for apt. Extra arguments go to the cmake configure step.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(
  build-essential cmake ninja-build clang              # toolchains (g++ 12, clang 14)
  libeigen3-dev nlohmann-json3-dev                     # the library's own dependencies
  doctest-dev libbenchmark-dev libcli11-dev            # tests, benches, example drivers
  libdnnl-dev libopenblas-dev                          # benchmark baselines only
  ocl-icd-opencl-dev                                   # Debian's dnnl-config.cmake requires OpenCL
  gnuplot-nox                                          # gsq-sweep's PNG (it writes SVG without it)
  openmpi-bin libopenmpi-dev                           # data-parallel fine-tuning (GSQ_WITH_MPI)
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# Node.js + npm for the llama.cpp interop test (node-llama-cpp). Many machines already have
# them from NodeSource, whose nodejs package bundles npm and conflicts with Debian's npm
# package ("held broken packages"), so ask Debian only when the commands are absent.
command -v npm >/dev/null 2>&1 || missing+=(nodejs npm)
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  echo "bootstrap: installing ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# llama.cpp for the interop test: node-llama-cpp's prebuilt binaries, installed once into a
# cache outside the tree (tests/interop/CMakeLists.txt: GSQ_NODE_LLAMA_DIR); quiet, and a
# failure only means the interop test reports a skip.
node_llama_dir="${GSQ_NODE_LLAMA_DIR:-$HOME/.cache/gsq/node-llama-cpp}"
if [ ! -d "$node_llama_dir/node_modules/node-llama-cpp" ]; then
  mkdir -p "$node_llama_dir"
  npm install --prefix "$node_llama_dir" --no-audit --no-fund --loglevel=error node-llama-cpp@3 >/dev/null ||
    echo "bootstrap: npm install node-llama-cpp@3 failed; the interop test will be skipped"
fi

cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release "$@"
cmake --build build --parallel "$(nproc)"
