#!/usr/bin/env bash
# The test command (README.md, CI): makes the images the tests run, then runs
# every test, unit and end-to-end, on the real engine.
#
#   scripts/test.sh [cargo test arguments]
#
# Each end-to-end test uses its own project (named ct-*), removed when the test
# ends; the sweep below also removes what a killed test run left behind.
set -euo pipefail
cd "$(dirname "$0")/.."

sweep() {
  local projects
  projects=$(docker ps -a --format '{{.Label "com.docker.compose.project"}}' | grep '^ct-' | sort -u || true)
  for project in $projects; do
    docker ps -aq --filter "label=com.docker.compose.project=$project" | xargs -r docker rm -f >/dev/null
    docker network ls -q --filter "label=com.docker.compose.project=$project" | xargs -r docker network rm >/dev/null
    docker volume ls -q --filter "label=com.docker.compose.project=$project" | xargs -r docker volume rm >/dev/null
  done
  docker network ls --format '{{.Name}}' | grep '^ct-' | xargs -r docker network rm >/dev/null || true
  docker volume ls --format '{{.Name}}' | grep '^ct-' | xargs -r docker volume rm >/dev/null || true
  # A private engine a killed test left running (tests/support/private_engine.rs):
  # its dockerd, its firewall rule, its mounts and its files.
  local dir pid
  for dir in /tmp/ct-engine-*; do
    [ -d "$dir" ] || continue
    pid=$(cat "$dir/dockerd.pid" 2>/dev/null || true)
    if [ -n "$pid" ] && kill "$pid" 2>/dev/null; then
      for _ in $(seq 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    fi
    while iptables -D FORWARD -s 10.213.0.0/16 -d 10.213.0.0/16 \
      -m comment --comment "$dir" -j ACCEPT 2>/dev/null; do :; done
    grep -o " $dir[^ ]*" /proc/self/mounts | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
    rm -rf "$dir"
  done
  # Swarm labs a killed test left (tests/support/swarm_lab.rs): their
  # dockerds, namespaces, cgroups, mounts and files.
  scripts/swarm-lab.sh sweep
  # A cron daemon a killed backup test left running.
  pkill -f 'busybox crond -f -l 0 -c /tmp/' 2>/dev/null || true
  ip -o link show type bridge 2>/dev/null | awk -F': ' '{print $2}' | grep '^cteng' |
    xargs -r -n1 ip link del 2>/dev/null || true
}
trap sweep EXIT

scripts/make-images.sh --monitoring --systemd --old-nginx --registry
cargo test --workspace --locked "$@"
