#!/usr/bin/env bash
# The baseline: one blue/green flip done the way the seed's shell scripts did
# it, so the benchmark can set cryptus beside it under the same load.
#
#   benches/baseline.sh PROJECT deploy|rollback TO_COLOR VERSION IMAGE
#
# docker CLI to start the new color, curl polling with sleep until it is
# healthy, the upstream rewritten with sed, `nginx -s reload`, then the old
# color stopped. It prints, in seconds: when the new color was started, when
# the poll saw it healthy, its uptime then (so the app's own readiness can be
# told from the polling), when traffic switched, when the old color stopped.
set -euo pipefail
project=$1 mode=$2 to=$3 version=$4 image=$5
case "$to" in
  green) from=blue ;;
  blue) from=green ;;
  *) echo "baseline: TO_COLOR is blue or green" >&2; exit 2 ;;
esac
nginx="$project-nginx-1"
new="$project-cryptus-$to-1"
old="$project-cryptus-$from-1"
conf=/etc/cryptus/nginx/nginx.conf
upstream=/etc/nginx/cryptus/upstream.conf
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

now() { date +%s.%N; }

if [ "$mode" != rollback ]; then
  docker rm -f "$new" >/dev/null 2>&1 || true
  docker create --name "$new" \
    --network "${project}_cryptus" --network-alias "cryptus-$to" \
    -p 127.0.0.1::3000 \
    -e NODE_ENV=production -e PORT=3000 -e "INSTANCE_COLOR=$to" -e "APP_VERSION=$version" \
    -e REDIS_URL=redis://redis:6379 \
    --label "com.docker.compose.project=$project" \
    --label "com.docker.compose.service=cryptus-$to" \
    --label com.docker.compose.container-number=1 \
    --label com.docker.compose.oneoff=False \
    --label "cryptus.version=$version" \
    "$image" >/dev/null
fi
# The seed's rollback starts the previous color again; a deploy the new one.
t_start=$(now)
docker start "$new" >/dev/null
port=$(docker port "$new" 3000/tcp | head -n1 | sed 's/.*://')
health=""
for _ in $(seq 60); do
  sleep 1
  health=$(curl -fsS "http://127.0.0.1:$port/api/health" 2>/dev/null) && break
done
t_healthy=$(now)
uptime=$(printf '%s' "$health" | sed -n 's/.*"uptime":\([0-9.]*\).*/\1/p')

docker cp "$nginx:$upstream" "$work/upstream.conf"
sed -i -e "s/cryptus-$from-/cryptus-$to-/g" -e "s/\"$from\"/\"$to\"/" -e "s/# active: $from/# active: $to/" "$work/upstream.conf"
docker cp "$work/upstream.conf" "$nginx:$upstream"
docker exec "$nginx" nginx -c "$conf" -s reload >/dev/null 2>&1
t_switched=$(now)

docker stop "$old" >/dev/null
t_done=$(now)
echo "$t_start $t_healthy ${uptime:-0} $t_switched $t_done"
