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
}
trap sweep EXIT

scripts/make-images.sh --monitoring
cargo test --workspace --locked "$@"
