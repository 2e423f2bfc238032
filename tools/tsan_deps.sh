#!/usr/bin/env bash
# Builds ThreadSanitizer-instrumented Abseil and gRPC from Debian 12's own
# source packages (the same versions and patches as libabsl-dev and
# libgrpc++-dev) and installs them into build-tsan-deps/prefix (or
# $FSRST_TSAN_DEPS_DIR/prefix). tools/tsan.sh builds the service tests against
# that prefix: with Debian's uninstrumented gRPC, TSan cannot see gRPC's own
# synchronization and reports races inside its call machinery, so the service
# tests can only be checked against an instrumented gRPC.
#
# Needs root (or sudo) once, to enable Debian's deb-src entries for
# `apt-get source`. Takes about an hour on 2 cores; idempotent (each library is
# built once; delete the directory to rebuild).
#
#   tools/tsan_deps.sh
set -euo pipefail
cd "$(dirname "$0")/.."
deps=$(realpath -m "${FSRST_TSAN_DEPS_DIR:-build-tsan-deps}")
prefix="$deps/prefix"
mkdir -p "$deps/src"

sudo=""
if [[ $(id -u) -ne 0 ]]; then sudo="sudo"; fi
if [[ -z $(apt-cache showsrc grpc 2>/dev/null) ]]; then
  echo "tsan_deps: enabling Debian deb-src entries (/etc/apt/sources.list.d/fsrst-deb-src.sources)"
  $sudo tee /etc/apt/sources.list.d/fsrst-deb-src.sources >/dev/null <<'EOF'
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  $sudo apt-get update -qq
fi

# dpkg-dev unpacks the source packages; gRPC's C++ plugin links libprotoc.
for p in dpkg-dev libprotoc-dev; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$p"
done

# Versions must match the installed -dev packages: our code, LibTorch and
# protobuf stay Debian's, only Abseil and gRPC are swapped.
source_of() { dpkg-query -W -f='${source:Version} ${source:Upstream-Version}\n' "$1"; }
read -r absl_debian absl_version < <(source_of libabsl-dev)
read -r grpc_debian grpc_version < <(source_of libgrpc++-dev)

flags="-fsanitize=thread -O1 -g1 -fno-omit-frame-pointer"
common=(-G Ninja -DCMAKE_BUILD_TYPE= "-DCMAKE_C_FLAGS=$flags" "-DCMAKE_CXX_FLAGS=$flags"
        -DCMAKE_EXE_LINKER_FLAGS=-fsanitize=thread -DCMAKE_SHARED_LINKER_FLAGS=-fsanitize=thread
        -DCMAKE_INSTALL_PREFIX="$prefix" -DCMAKE_INSTALL_LIBDIR=lib -DCMAKE_PREFIX_PATH="$prefix"
        -DCMAKE_INSTALL_RPATH="$prefix/lib" -DBUILD_SHARED_LIBS=ON -DCMAKE_CXX_STANDARD=17)

fetch() {  # fetch <source package> <Debian version> <upstream version>: unpacked, Debian's patches applied
  local dir="$deps/src/$1-$3"
  if [[ ! -d $dir ]]; then
    (cd "$deps/src" && apt-get source -qq "$1=$2" >/dev/null)
  fi
  [[ -d $dir ]] || { echo "tsan_deps: expected $dir after apt-get source $1" >&2; exit 1; }
  echo "$dir"
}

if [[ ! -f $deps/abseil.done ]]; then
  src=$(fetch abseil "$absl_debian" "$absl_version")
  cmake -S "$src" -B "$deps/abseil" "${common[@]}" -DABSL_PROPAGATE_CXX_STD=ON >/dev/null
  cmake --build "$deps/abseil" -j"$(nproc)"
  cmake --install "$deps/abseil" >/dev/null
  touch "$deps/abseil.done"
fi

if [[ ! -f $deps/grpc.done ]]; then
  src=$(fetch grpc "$grpc_debian" "$grpc_version")
  # As Debian's debian/rules, minus the tests and the other languages' plugins.
  cmake -S "$src" -B "$deps/grpc" "${common[@]}" \
    -DgRPC_INSTALL=ON -DgRPC_BUILD_TESTS=OFF -DgRPC_BACKWARDS_COMPATIBILITY_MODE=OFF \
    -DgRPC_ABSL_PROVIDER=package -DgRPC_CARES_PROVIDER=package -DgRPC_PROTOBUF_PROVIDER=package \
    -DgRPC_RE2_PROVIDER=package -DgRPC_SSL_PROVIDER=package -DgRPC_ZLIB_PROVIDER=package \
    -DgRPC_BUILD_CODEGEN=ON -DgRPC_BUILD_GRPC_CPP_PLUGIN=ON -DgRPC_BUILD_GRPC_CSHARP_PLUGIN=OFF \
    -DgRPC_BUILD_GRPC_NODE_PLUGIN=OFF -DgRPC_BUILD_GRPC_OBJECTIVE_C_PLUGIN=OFF \
    -DgRPC_BUILD_GRPC_PHP_PLUGIN=OFF -DgRPC_BUILD_GRPC_PYTHON_PLUGIN=OFF \
    -DgRPC_BUILD_GRPC_RUBY_PLUGIN=OFF >/dev/null
  cmake --build "$deps/grpc" -j"$(nproc)"
  cmake --install "$deps/grpc" >/dev/null
  touch "$deps/grpc.done"
fi
echo "tsan_deps: instrumented Abseil $absl_version and gRPC $grpc_version in $prefix"
