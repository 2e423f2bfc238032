#!/usr/bin/env bash
# Installs every Debian 12 package fsrst-serve needs to build, test and run.
# Idempotent: apt runs only when a package is missing. Needs root (or sudo).
set -euo pipefail

packages=(
  # build
  build-essential cmake ninja-build pkg-config git
  # C++ libraries
  libtorch-dev libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libabsl-dev libturbojpeg0-dev prometheus-cpp-dev libcivetweb-dev nlohmann-json3-dev libgtest-dev libgmock-dev
  # Python: model, tests, clients
  python3-torch python3-torchvision python3-pil python3-numpy python3-grpcio python3-protobuf
  python3-pytest python3-yaml python3-matplotlib
  # tests/store: opens a stored value with the key, to prove the plaintext it checks for is exact
  python3-cryptography
  # promtool, to check the metrics text
  prometheus
  # libFuzzer targets (tools/fuzz.sh): clang and its fuzzer/sanitizer runtimes
  clang-14 libclang-rt-14-dev
  # the TLS tests make a throwaway CA and certificates
  openssl
  # deploy tests: nginx as the identity-hashing gRPC proxy, yamllint for deploy/
  nginx yamllint
  # the shared reference store: hiredis to talk to Redis, redis-server for the tests
  libhiredis-dev redis-server libssl-dev
  # PNG frames and references in the C++ CLI
  libpng-dev
  # examples/prepare_frames.py: videos, and --crop detect's Haar cascade
  python3-opencv opencv-data
  # model/fsrst/video_codec.py: call frames through H.264 (libx264), as a video stream sends them
  ffmpeg
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]} == 0)); then
  echo "install_deps: all ${#packages[@]} packages present"
  exit 0
fi
echo "install_deps: installing ${missing[*]}"
sudo=""
if [[ $(id -u) -ne 0 ]]; then sudo="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
