#!/usr/bin/env bash
# Makes every image the cryptus stack needs, on a machine with no image registry.
#
#   scripts/make-images.sh [--rebuild] [--pull] [--monitoring] [--systemd] [--old-nginx] [--registry]
#
# nginx and redis come from this host's Debian packages: the binary and every
# shared library `ldd` lists are copied into a root filesystem with the users,
# groups and directories they need, and `docker import`ed. The reference app is
# a static binary in a `FROM scratch` image. Images that already exist are kept
# unless --rebuild is given; the app image is rebuilt whenever its binary changed.
#
# The images (and the variables that select them, see README.md):
#   NGINX_IMAGE=cryptus/nginx:offline    REDIS_IMAGE=cryptus/redis:offline
#   CRYPTUS_IMAGE=cryptus:latest         (also tagged cryptus-app:<version>)
# With --monitoring, from Debian's prometheus packages, with the official
# images' entrypoints so the same compose file runs either:
#   PROMETHEUS_IMAGE=cryptus/prometheus:offline (with promtool)
#   ALERTMANAGER_IMAGE=cryptus/alertmanager:offline (with amtool)
#   NODE_EXPORTER_IMAGE=cryptus/node-exporter:offline
#   NGINX_EXPORTER_IMAGE=cryptus/nginx-exporter:offline
#   REDIS_EXPORTER_IMAGE=cryptus/redis-exporter:offline
# Grafana and cAdvisor are not in Debian: pull them where a registry answers.
# With --systemd, for the tests only: cryptus/systemd:offline, this host's
# systemd as PID 1 with its unit files (and the libraries a cryptus binary
# mounted into it needs), so README's backup timer fires under real systemd.
# With --old-nginx, for the tests only: cryptus/nginx:host, this host's own
# nginx package (Debian 12's 1.22), an nginx without upstream `resolve`.
# With --registry, for the tests only: cryptus/registry:offline, Debian's
# docker-registry (distribution 2.8) as the official registry:2 image runs
# it (port 5000, data in /var/lib/registry), for the Swarm lab's nodes to
# push to and pull from.
# With --pull, where a registry is reachable, the official images the compose
# file defaults to (nginx:1.28-alpine, redis:7-alpine) are pulled instead and
# no offline nginx or redis image is made; without it nothing leaves the host.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
work="$here/target/images"
rebuild=0
pull=0
monitoring=0
systemd=0
old_nginx=0
registry=0
for arg in "$@"; do
  case "$arg" in
    --rebuild) rebuild=1 ;;
    --pull) pull=1 ;;
    --monitoring) monitoring=1 ;;
    --systemd) systemd=1 ;;
    --old-nginx) old_nginx=1 ;;
    --registry) registry=1 ;;
    *) echo "usage: scripts/make-images.sh [--rebuild] [--pull] [--monitoring] [--systemd] [--old-nginx] [--registry]" >&2; exit 2 ;;
  esac
done

NGINX_TAG=${NGINX_OFFLINE_IMAGE:-cryptus/nginx:offline}
REDIS_TAG=${REDIS_OFFLINE_IMAGE:-cryptus/redis:offline}
APP_TAG=${CRYPTUS_APP_IMAGE:-cryptus:latest}
APP_VERSION=${APP_VERSION:-$(sed -n 's/^version = "\(.*\)"/\1/p' "$here/app/Cargo.toml" | head -n1)}

say() { printf 'make-images: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

command -v docker >/dev/null || die "the docker CLI is missing; hint: apt-get install docker.io"
docker info >/dev/null 2>&1 || die "no Docker engine answers; hint: start dockerd or set DOCKER_HOST"

# The host packages the images are made from.
need_packages=()
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need_packages+=(nginx)
[ -x /usr/bin/redis-server ] || need_packages+=(redis-server)
[ -x /usr/bin/redis-cli ] || need_packages+=(redis-tools)
[ -x /bin/busybox ] || need_packages+=(busybox-static)
[ $systemd = 0 ] || [ -x /lib/systemd/systemd ] || need_packages+=(systemd)
[ $registry = 0 ] || [ -x /usr/bin/docker-registry ] || need_packages+=(docker-registry)
if [ $monitoring = 1 ]; then
  [ -x /usr/bin/prometheus ] || need_packages+=(prometheus)
  [ -x /usr/bin/prometheus-alertmanager ] || need_packages+=(prometheus-alertmanager)
  [ -x /usr/bin/prometheus-node-exporter ] || need_packages+=(prometheus-node-exporter)
  [ -x /usr/bin/prometheus-nginx-exporter ] || need_packages+=(prometheus-nginx-exporter)
  [ -x /usr/bin/prometheus-redis-exporter ] || need_packages+=(prometheus-redis-exporter)
fi
if [ ${#need_packages[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    say "installing ${need_packages[*]} from Debian's packages"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_packages[@]}" >/dev/null
  else
    die "missing host packages: ${need_packages[*]}; hint: sudo apt-get install ${need_packages[*]}"
  fi
fi

exists() { docker image inspect "$1" >/dev/null 2>&1; }

# copy_with_libs ROOTFS FILE [AS]: copies FILE (following links) to AS inside
# ROOTFS, with every shared library it loads at the same path as on the host.
copy_with_libs() {
  local root=$1 file=$2 as=${3:-$2}
  install -D -m 0755 "$(readlink -f "$file")" "$root$as"
  ldd "$file" | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\/.*ld-linux/ {print $1}' | while read -r lib; do
    [ -e "$root$lib" ] || install -D -m 0755 "$(readlink -f "$lib")" "$root$lib"
  done
}

# base_rootfs ROOTFS: users, groups, name resolution and the dirs every image needs.
base_rootfs() {
  local root=$1
  rm -rf "$root"
  mkdir -p "$root"/{etc,tmp,run,data,var/run,var/log,var/lib}
  chmod 1777 "$root/tmp"
  cat > "$root/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/usr/sbin/nologin
www-data:x:33:33:www-data:/var/www:/usr/sbin/nologin
nginx:x:101:101:nginx:/var/cache/nginx:/usr/sbin/nologin
redis:x:999:999:redis:/data:/usr/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
EOF
  cat > "$root/etc/group" <<'EOF'
root:x:0:
www-data:x:33:
nginx:x:101:
redis:x:999:
nogroup:x:65534:
EOF
  echo 'hosts: files dns' > "$root/etc/nsswitch.conf"
}

# add_shell ROOTFS: a static busybox as /bin/sh with the few tools cryptus
# runs in nginx's container (as the official images have): one exec writes,
# renames, checks and reloads nginx's upstream.
add_shell() {
  local root=$1
  install -D -m 0755 /bin/busybox "$root/bin/busybox"
  for tool in sh cat cp mv rm; do ln -sf busybox "$root/bin/$tool"; done
}

import_rootfs() {
  local root=$1 tag=$2; shift 2
  tar -C "$root" --numeric-owner -c . | docker import "$@" - "$tag" >/dev/null
  say "made $tag"
}

# nginx comes from Debian's newest suite (NGINX_SUITE, default sid), in a
# `debootstrap --variant=minbase` root filesystem: an official-like image (a
# shell, real users and paths) of nginx 1.27.4 or later, which has
# keepalive_min_timeout: with it a reload no longer closes idle keep-alive
# connections under clients that never retry. Only that root filesystem sees
# sid; the host is never upgraded. Where debootstrap cannot reach Debian's
# servers, the image is made from the host's nginx package instead, and says so.
NGINX_SUITE=${NGINX_SUITE:-sid}

make_nginx() {
  # An image made another way (the host's nginx, an older recipe) is remade.
  local recipe="debian-$NGINX_SUITE-1"
  if exists "$NGINX_TAG" && [ $rebuild = 0 ] &&
    [ "$(docker image inspect -f '{{index .Config.Labels "cryptus.recipe"}}' "$NGINX_TAG" 2>/dev/null)" = "$recipe" ]; then
    say "$NGINX_TAG exists"; return
  fi
  local root="$work/nginx"
  if nginx_rootfs_from_suite "$root"; then
    local version
    version=$(chroot "$root" nginx -v 2>&1 | sed -n 's|.*nginx/\([0-9.]*\).*|\1|p')
    # No NGINX_VERSION variable: cryptus asks nginx itself (`nginx -v`).
    import_rootfs "$root" "$NGINX_TAG" \
      --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
      --change 'EXPOSE 80' \
      --change 'CMD ["nginx", "-g", "daemon off;"]' \
      --change "LABEL cryptus.recipe=$recipe" \
      --message "nginx $version from Debian $NGINX_SUITE"
  else
    say "warning: no Debian $NGINX_SUITE root filesystem (see $work/debootstrap.log); making $NGINX_TAG from the host's nginx $(nginx -v 2>&1 | sed -n 's|.*nginx/||p'), which may lack keepalive_min_timeout"
    nginx_from_host "$root" "$NGINX_TAG"
  fi
}

# The host's own nginx, whatever its version, for the tests of an older nginx.
OLD_NGINX_TAG=cryptus/nginx:host
make_old_nginx() {
  if exists "$OLD_NGINX_TAG" && [ $rebuild = 0 ]; then say "$OLD_NGINX_TAG exists"; return; fi
  nginx_from_host "$work/nginx-host" "$OLD_NGINX_TAG"
}

# nginx_rootfs_from_suite ROOTFS: Debian's nginx package in a minimal root
# filesystem of NGINX_SUITE, with the official image's user (nginx, 101) and
# directories, and without apt's caches, documentation and locales.
nginx_rootfs_from_suite() {
  local root=$1
  if ! command -v debootstrap >/dev/null; then
    [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null || return 1
    say "installing debootstrap from Debian's packages"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null 2>&1 ||
      { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null; } ||
      return 1
  fi
  rm -rf "$root"
  mkdir -p "$work"
  say "making a Debian $NGINX_SUITE root filesystem with nginx (debootstrap --variant=minbase)"
  timeout 600 debootstrap --variant=minbase --include=nginx "$NGINX_SUITE" "$root" >"$work/debootstrap.log" 2>&1 || return 1
  chroot "$root" sh -e -c '
    getent group nginx >/dev/null || groupadd --system --gid 101 nginx
    getent passwd nginx >/dev/null || useradd --system --uid 101 --gid nginx --home-dir /var/cache/nginx --shell /usr/sbin/nologin nginx
    mkdir -p /var/cache/nginx /var/run /var/log/nginx
    ln -sf /dev/stdout /var/log/nginx/access.log
    ln -sf /dev/stderr /var/log/nginx/error.log
    apt-get clean
    rm -rf /var/lib/apt/lists/* /usr/share/doc/* /usr/share/man/* /usr/share/locale/* /usr/share/info/*
  ' >>"$work/debootstrap.log" 2>&1 || return 1
}

# nginx_from_host ROOTFS TAG: the host's nginx binary with its libraries.
nginx_from_host() {
  local root=$1 tag=$2
  base_rootfs "$root"
  copy_with_libs "$root" /usr/sbin/nginx
  add_shell "$root"
  # As in Debian-based nginx images: bash (whose /dev/tcp cryptus's probes
  # use on a Swarm; busybox's own wget cannot resolve in this root) and
  # the tools the probes and nginx's Swarm entrypoint call by name.
  copy_with_libs "$root" /bin/bash
  for tool in timeout sed mkdir sort nslookup; do ln -sf busybox "$root/bin/$tool"; done
  install -D -m 0644 /etc/nginx/mime.types "$root/etc/nginx/mime.types"
  mkdir -p "$root"/etc/nginx/conf.d "$root"/var/lib/nginx "$root"/var/log/nginx "$root"/var/cache/nginx
  chown 33:33 "$root/var/lib/nginx"
  local version
  version=$(nginx -v 2>&1 | sed -n 's|.*nginx/\([0-9.]*\).*|\1|p')
  import_rootfs "$root" "$tag" \
    --change 'ENV PATH=/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'EXPOSE 80' \
    --change 'CMD ["nginx", "-g", "daemon off;"]' \
    --message "nginx $version from the host's Debian package"
}

make_redis() {
  if exists "$REDIS_TAG" && [ $rebuild = 0 ]; then say "$REDIS_TAG exists"; return; fi
  local root="$work/redis"
  base_rootfs "$root"
  copy_with_libs "$root" /usr/bin/redis-server /usr/bin/redis-server
  copy_with_libs "$root" /usr/bin/redis-cli /usr/bin/redis-cli
  chown 999:999 "$root/data"
  import_rootfs "$root" "$REDIS_TAG" \
    --change 'ENV PATH=/usr/bin:/bin' \
    --change 'WORKDIR /data' \
    --change 'VOLUME /data' \
    --change 'EXPOSE 6379' \
    --change 'CMD ["redis-server"]' \
    --message "redis $(redis-server --version | sed -n 's/.*v=\([0-9.]*\).*/\1/p') from Debian's package"
}

# make_tool TAG [HOST_BINARY:IMAGE_PATH | dir:HOST_DIR ...]: an image of
# Debian binaries (with their libraries and a busybox shell) and directories
# they read, whose entrypoint is the first binary's path in the image, as in
# the official image.
make_tool() {
  local tag=$1; shift
  if exists "$tag" && [ $rebuild = 0 ]; then say "$tag exists"; return; fi
  local root="$work/$(echo "$tag" | tr '/:' '__')"
  base_rootfs "$root"
  add_shell "$root"
  local entry=""
  for pair in "$@"; do
    if [ "${pair%%:*}" = dir ]; then
      mkdir -p "$root$(dirname "${pair#dir:}")"
      cp -a "${pair#dir:}" "$root${pair#dir:}"
      continue
    fi
    copy_with_libs "$root" "${pair%%:*}" "${pair#*:}"
    [ -n "$entry" ] || entry=${pair#*:}
  done
  mkdir -p "$root/prometheus" "$root/alertmanager" "$root/etc/prometheus" "$root/etc/alertmanager"
  chown 65534:65534 "$root/prometheus" "$root/alertmanager"
  # They run as nobody, as the official images do: data directories are
  # theirs, and whatever cryptus restores into them must be too.
  import_rootfs "$root" "$tag" \
    --change 'ENV PATH=/usr/local/bin:/usr/bin:/bin' \
    --change 'USER nobody' \
    --change "ENTRYPOINT [\"$entry\"]" \
    --message "$(basename "$entry") from Debian's package"
}

make_monitoring() {
  make_tool "${PROMETHEUS_OFFLINE_IMAGE:-cryptus/prometheus:offline}" \
    /usr/bin/prometheus:/bin/prometheus /usr/bin/promtool:/bin/promtool
  make_tool "${ALERTMANAGER_OFFLINE_IMAGE:-cryptus/alertmanager:offline}" \
    /usr/bin/prometheus-alertmanager:/bin/alertmanager /usr/bin/amtool:/bin/amtool \
    dir:/usr/share/prometheus/alertmanager
  make_tool "${NODE_EXPORTER_OFFLINE_IMAGE:-cryptus/node-exporter:offline}" \
    /usr/bin/prometheus-node-exporter:/bin/node_exporter
  make_tool "${NGINX_EXPORTER_OFFLINE_IMAGE:-cryptus/nginx-exporter:offline}" \
    /usr/bin/prometheus-nginx-exporter:/usr/bin/nginx-prometheus-exporter
  make_tool "${REDIS_EXPORTER_OFFLINE_IMAGE:-cryptus/redis-exporter:offline}" \
    /usr/bin/prometheus-redis-exporter:/redis_exporter
}

make_app() {
  say "building the reference app as a static binary"
  (cd "$here" && RUSTFLAGS='-C target-feature=+crt-static' \
    cargo build --quiet --release -p cryptus-app --target x86_64-unknown-linux-gnu)
  # app/ with app/dist/cryptus-app is the app's build context: this script
  # builds it here, and `cryptus deploy --build` builds it the same way.
  local context="$here/app"
  mkdir -p "$context/dist"
  cp "$here/target/x86_64-unknown-linux-gnu/release/cryptus-app" "$context/dist/cryptus-app.tmp"
  mv -f "$context/dist/cryptus-app.tmp" "$context/dist/cryptus-app"
  local sum
  sum=$(sha256sum "$context/dist/cryptus-app" | cut -c1-64)
  if exists "$APP_TAG" && [ $rebuild = 0 ] &&
     [ "$(docker image inspect -f '{{index .Config.Labels "cryptus.app.sha256"}}' "$APP_TAG")" = "$sum" ] &&
     [ "$(docker image inspect -f '{{index .Config.Labels "org.opencontainers.image.version"}}' "$APP_TAG")" = "$APP_VERSION" ]; then
    say "$APP_TAG is up to date"
  else
    # The classic builder builds FROM scratch with no registry; BuildKit may try to resolve it.
    DOCKER_BUILDKIT=0 docker build --quiet \
      --build-arg "VERSION=$APP_VERSION" --label "cryptus.app.sha256=$sum" \
      -t "$APP_TAG" "$context" >/dev/null 2>"$work/app-build.log" ||
      { cat "$work/app-build.log" >&2; die "building $APP_TAG failed"; }
    say "made $APP_TAG (version $APP_VERSION)"
  fi
  docker tag "$APP_TAG" "cryptus-app:$APP_VERSION"
}

make_systemd() {
  local tag=${SYSTEMD_TEST_IMAGE:-cryptus/systemd:offline}
  if exists "$tag" && [ $rebuild = 0 ]; then say "$tag exists"; return; fi
  local root="$work/systemd"
  base_rootfs "$root"
  add_shell "$root"
  copy_with_libs "$root" /lib/systemd/systemd
  mkdir -p "$root/lib/systemd" "$root/etc/systemd/system"
  cp -a /lib/systemd/system "$root/lib/systemd/"
  # What a cryptus binary mounted at /usr/local/bin/cryptus loads.
  for lib in /lib/x86_64-linux-gnu/libgcc_s.so.1 /lib/x86_64-linux-gnu/libm.so.6; do
    [ -e "$lib" ] && install -D -m 0644 "$(readlink -f "$lib")" "$root$lib"
  done
  cp /etc/os-release "$root/etc/os-release"
  : > "$root/etc/machine-id"
  import_rootfs "$root" "$tag" \
    --change 'CMD ["/lib/systemd/systemd"]' \
    --message "systemd $(/lib/systemd/systemd --version | sed -n '1s/^systemd \([0-9]*\).*/\1/p') from Debian's package, for tests"
}

# The registry, as the official registry:2 image runs it: /bin/registry
# serve /etc/docker/registry/config.yml, on port 5000, storing in
# /var/lib/registry, with deletes allowed.
make_registry() {
  local tag=${REGISTRY_TEST_IMAGE:-cryptus/registry:offline}
  if exists "$tag" && [ $rebuild = 0 ]; then say "$tag exists"; return; fi
  local root="$work/registry"
  base_rootfs "$root"
  add_shell "$root"
  copy_with_libs "$root" /usr/bin/docker-registry /bin/registry
  mkdir -p "$root/etc/docker/registry" "$root/var/lib/registry"
  cat > "$root/etc/docker/registry/config.yml" <<'EOF'
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: /var/lib/registry
  delete:
    enabled: true
http:
  addr: :5000
EOF
  import_rootfs "$root" "$tag" \
    --change 'ENV PATH=/bin' \
    --change 'VOLUME /var/lib/registry' \
    --change 'EXPOSE 5000' \
    --change 'ENTRYPOINT ["/bin/registry"]' \
    --change 'CMD ["serve", "/etc/docker/registry/config.yml"]' \
    --message "registry $(/usr/bin/docker-registry --version 2>/dev/null | awk '{print $3}') from Debian's docker-registry, for tests"
}

mkdir -p "$work"
if [ $pull = 1 ] && docker pull -q nginx:1.28-alpine >/dev/null 2>&1 && docker pull -q redis:7-alpine >/dev/null 2>&1; then
  say "pulled the official nginx:1.28-alpine and redis:7-alpine"
else
  [ $pull = 1 ] && say "no registry answers; making the images offline"
  make_nginx
  make_redis
fi
make_app
[ $monitoring = 1 ] && make_monitoring
[ $systemd = 1 ] && make_systemd
[ $old_nginx = 1 ] && make_old_nginx
[ $registry = 1 ] && make_registry
exit 0
