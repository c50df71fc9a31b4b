#!/usr/bin/env bash
# Quick start: on a machine with a Docker engine and no registry, makes the
# images, builds cryptus, brings the stack up on http://127.0.0.1:8000, then
# runs a demo deploy: it builds version 0.2.0 of the app through the engine,
# switches traffic to it with no failed request, and shows the status.
#
#   scripts/quickstart.sh
#
# It writes compose/.env (unless one exists) so that later cryptus commands in
# this directory use the same images and port.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/make-images.sh
echo "quickstart: building cryptus" >&2
cargo build --release --locked --quiet --bin cryptus

if [ ! -e compose/.env ]; then
  cat > compose/.env <<'ENV'
# Written by scripts/quickstart.sh: the offline images and a loopback port.
NGINX_IMAGE=cryptus/nginx:offline
REDIS_IMAGE=cryptus/redis:offline
CRYPTUS_IMAGE=cryptus:latest
CRYPTUS_BIND=127.0.0.1
CRYPTUS_HTTP_PORT=8000
CRYPTUS_HTTPS_PORT=8443
ENV
  echo "quickstart: wrote compose/.env" >&2
fi

cryptus=target/release/cryptus
$cryptus start
echo "quickstart: demo deploy of version 0.2.0, built from app/" >&2
$cryptus deploy --build --version 0.2.0 --watch 3s
$cryptus status
echo >&2
echo "quickstart: the app answers at http://127.0.0.1:8000/api/health" >&2
echo "quickstart: try $cryptus rollback, $cryptus status, $cryptus stop, $cryptus start" >&2
