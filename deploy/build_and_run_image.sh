#!/usr/bin/env bash
# Builds deploy/Dockerfile with buildah (no Docker engine needed), starts fsrst_server in
# the image, checks it the way the image's HEALTHCHECK does, sends it a request from the
# host with the Python client, and stops it with SIGTERM (the drain must exit 0).
#
#   deploy/build_and_run_image.sh          # as root; installs buildah podman debootstrap
#
# The base image debian:bookworm is made from Debian's packages by
# ../shared/tools/make-base-image.sh (FSRST_BASE_IMAGE_SCRIPT overrides the path), so no
# image registry is needed; the build's apt reaches Debian's mirrors. Takes minutes: the
# build stage compiles the project (see README.md "Deploy" for the measured time).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
image=${FSRST_IMAGE:-localhost/fsrst-serve:cpu}
base_script=${FSRST_BASE_IMAGE_SCRIPT:-$root/../shared/tools/make-base-image.sh}
start=$SECONDS
step() { echo "== [$((SECONDS - start))s] $*"; }

missing=()
for p in buildah podman debootstrap; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  step "installing ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

step "base image debian:bookworm"
bash "$base_script"

step "buildah bud -f deploy/Dockerfile -t $image"
buildah bud --isolation chroot --format docker --layers -f deploy/Dockerfile -t "$image" .
size=$(buildah images --format '{{.Size}}' "$image" | head -n1)
step "built $image ($size)"

work=$(mktemp -d)
ctr=$(buildah from "$image")
server_pid=""
cleanup() {
  if [[ -n $server_pid ]] && kill -0 "$server_pid" 2>/dev/null; then kill -KILL "$server_pid"; fi
  buildah rm "$ctr" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

# What the image is: a non-root user, the shipped models, no compiler in the run stage.
user=$(buildah inspect --format '{{.Docker.Config.User}}' "$image")
[[ $user == 10001:10001 ]] || { echo "image user is '$user', expected 10001:10001"; exit 1; }
health=$(buildah inspect --format '{{.Docker.Config.Healthcheck.Test}}' "$image")
echo "user $user, healthcheck $health"
buildah run --isolation chroot "$ctr" -- ls -l /opt/fsrst/model/weights
if buildah run --isolation chroot "$ctr" -- sh -c 'command -v c++ || command -v cmake'; then
  echo "the run stage has build tools"; exit 1
fi
echo "no compiler or cmake in the run stage (the failed lookup above is the check)"

# descendant NAME PID: the pid of the process called NAME under PID (buildah runs it as a
# child of a child), or nothing.
descendant() {
  ps -eo pid=,ppid=,comm= | awk -v name="$1" -v top="$2" '
    { parent[$1] = $2; comm[$1] = $3 }
    END { for (p in comm) if (comm[p] == name)
            for (q = parent[p]; q > 1; q = parent[q]) if (q == top) { print p; exit } }'
}

# Free loopback ports for the server (chroot isolation shares the host's network).
read -r port metrics_port < <(/usr/bin/python3 -c '
import socket
socks = [socket.socket() for _ in range(2)]
for s in socks: s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in socks])')

step "starting fsrst_server in the image on 127.0.0.1:$port (metrics $metrics_port)"
buildah run --isolation chroot "$ctr" -- fsrst_server \
  --model=/opt/fsrst/model/weights/fsrst_x4.pt --device=cpu --host=127.0.0.1 \
  --port="$port" --metrics_port="$metrics_port" >"$work/server.log" 2>&1 &
runner=$!
for _ in $(seq 600); do
  server_pid=$(descendant fsrst_server "$runner")
  if grep -q "SERVING" "$work/server.log"; then break; fi
  if ! kill -0 "$runner" 2>/dev/null; then cat "$work/server.log"; exit 1; fi
  sleep 0.2
done
grep "SERVING" "$work/server.log"

step "health check, as the image's HEALTHCHECK runs it (inside the image)"
buildah run --isolation chroot "$ctr" -- fsrst_client --server="127.0.0.1:$port" \
  --timeout_ms=4000 health

step "a request from the host (Python client): register 2 references, enhance a frame"
/usr/bin/python3 - "$port" <<'PY'
import sys
import numpy as np
sys.path.insert(0, "clients/python")
from fsrst_client import FsrstClient
rng = np.random.default_rng(0)
with FsrstClient(f"127.0.0.1:{sys.argv[1]}", timeout_s=60) as client:
    info = client.server_info()
    refs = [rng.integers(0, 256, (160, 160, 3), dtype=np.uint8) for _ in range(2)]
    client.register_references("deploy-check", refs)
    face = client.enhance("deploy-check", rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
    assert face.shape == (128, 128, 3), face.shape
    print(f"served by {info.model_name} {info.model_version} on {info.device}: "
          f"32x32 -> {face.shape[1]}x{face.shape[0]}")
PY
/usr/bin/python3 -c 'import sys, urllib.request
print(urllib.request.urlopen(sys.argv[1]).read().decode())' \
  "http://127.0.0.1:$metrics_port/metrics" | grep -E '^fsrst_frames_enhanced_total '

step "SIGTERM: drain and exit"
[[ -n $server_pid ]] || { echo "fsrst_server's pid not found"; exit 1; }
kill -TERM "$server_pid"
wait "$runner"
tail -n 2 "$work/server.log"
step "done: image $image built, served a request from the host and drained"
