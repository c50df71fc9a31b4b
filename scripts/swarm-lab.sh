#!/usr/bin/env bash
# A Docker Swarm of several nodes on this one machine, for the end-to-end tests
# (tests/support/swarm_lab.rs drives it; docs/swarm.md explains it).
#
#   scripts/swarm-lab.sh up DIR NODES [IMAGE...]
#       starts NODES private dockerds, each in network, mount and UTS
#       namespaces of its own, with its own config, data root, exec root,
#       socket (DIR/nN/docker.sock) and containerd; forms a swarm (node 1 the
#       manager, the others workers); loads IMAGE... from the host engine
#       (docker save | docker load, no registry) and a busybox tool image
#       (cryptus-lab/busybox:1) into every node. A task runs the image its
#       node has, with no registry lookup; with LAB_PULL=1, a task pulls
#       its image first, as on a real node: from a registry the test runs
#       on a lab address (every node trusts plain HTTP on the lab's
#       network); any other pull fails at once (the lab has no route out)
#       and the task runs the image its node has.
#   scripts/swarm-lab.sh down DIR
#       removes everything the lab named by DIR made, whether it is up, half
#       started or left by a killed run; a lab that is not there is no error.
#   scripts/swarm-lab.sh nsexec DIR N COMMAND...
#       runs COMMAND in node N's network namespace.
#   scripts/swarm-lab.sh cut DIR N
#       cuts node N's link to the lab's switch (its veth there goes down):
#       its packets are dropped, as when a machine's network is lost.
#   scripts/swarm-lab.sh kill-engine DIR N
#       SIGKILLs node N's dockerd, as a machine that died would leave it;
#       down removes what is left of it as for any node.
#   scripts/swarm-lab.sh sweep
#       runs down for every lab there is: every /tmp/ctsw* directory and
#       every ctsw*-lab / ctsw*-nN namespace (scripts/test.sh, after a
#       killed run; never while other tests run labs).
#
# DIR is /tmp/ctsw<id> (keep it short: socket paths are limited to 107 bytes);
# its last part names everything else: network namespaces <name>-lab (the
# bridge, "the switch") and <name>-nN, cgroups /<name>-nN. scripts/test.sh
# sweeps every /tmp/ctsw* and ctsw*-* namespace a killed run left.
#
# The lab bridge lives in the lab's own namespace, not the host's: no veth,
# bridge or firewall rule is added to the host, whose FORWARD policy would
# drop the lab's traffic. Underlay 10.99.0.0/24, node N at 10.99.0.(10+N),
# reachable only from inside the lab (nsexec). Processes are only killed by
# PIDs proven to be the lab's (its pid files, its namespaces, its cgroups).
set -euo pipefail

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0" >&2; exit 2; }
if [ "${1:-}" = sweep ]; then
  for lab in $({ ls -d /tmp/ctsw* 2>/dev/null || true
    ip netns list 2>/dev/null | awk '{print $1}' | sed -n 's:^\(ctsw[0-9x]*\)-\(lab\|n[0-9]\)$:/tmp/\1:p'
  } | sort -u); do
    "$0" down "$lab" || true
  done
  exit 0
fi
[ $# -ge 2 ] || usage
CMD=$1 LAB=$2
shift 2
case "$LAB" in /tmp/ctsw*) ;; *) echo "swarm-lab: DIR must be /tmp/ctsw<id>, not $LAB" >&2; exit 2 ;; esac
PFX=${LAB##*/}
LABNS=$PFX-lab
SUBNET=10.99.0
TOOL_IMAGE=cryptus-lab/busybox:1
SWARM_POOL=10.200.0.0/16
NODES=0

log() { printf '[swarm-lab %s %s] %s\n' "$PFX" "$(date +%T)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# The node count of a lab that may be half made: the highest N among DIR/nN
# and the namespaces <name>-nN.
detect_nodes() {
  local m=0 x
  for x in "$LAB"/n[0-9]; do [ -d "$x" ] && [ "${x##*/n}" -gt "$m" ] && m=${x##*/n}; done
  for x in $(ip netns list 2>/dev/null | awk '{print $1}' | sed -n "s/^$PFX-n\([0-9]\)\$/\1/p"); do
    [ "$x" -gt "$m" ] && m=$x
  done
  echo "$m"
}

nodes() { seq 1 "$NODES"; }
ip_of() { echo "$SUBNET.$((10 + $1))"; }
ns_of() { echo "$PFX-n$1"; }
dir_of() { echo "$LAB/n$1"; }
sock_of() { echo "$LAB/n$1/docker.sock"; }
# docker against node N, under a time limit: no command of the lab may hang.
d() { local n=$1 s=$2; shift 2; timeout "$s" docker -H "unix://$(sock_of "$n")" "$@"; }
alive_engine() { [ -S "$(sock_of "$1")" ] && curl -fsS -m 3 --unix-socket "$(sock_of "$1")" http://x/_ping >/dev/null 2>&1; }

# PID of node N's dockerd, only if /proc proves it is ours (its command line
# names our config file).
dockerd_pid() {
  local n=$1 f p
  for f in "$(dir_of "$n")/dockerd.pid" "$(dir_of "$n")/launcher.pid"; do
    [ -s "$f" ] || continue
    p=$(cat "$f")
    if { tr '\0' ' ' <"/proc/$p/cmdline"; } 2>/dev/null | grep -qF -- "$(dir_of "$n")/daemon.json"; then
      echo "$p"
      return 0
    fi
  done
  return 1
}
containerd_pid() {
  local n=$1 f p
  f="$(dir_of "$n")/exec/containerd/containerd.pid"
  [ -s "$f" ] || return 1
  p=$(cat "$f")
  { tr '\0' ' ' <"/proc/$p/cmdline"; } 2>/dev/null | grep -qF -- "$(dir_of "$n")/" && echo "$p"
}
# Processes in node N's network namespace (dockerd, containerd, shims, proxies).
netns_pids() {
  local ino p
  ino=$(cat "$LAB/netns-inode.$1" 2>/dev/null || stat -L -c %i "/run/netns/$(ns_of "$1")" 2>/dev/null) || return 0
  for p in /proc/[0-9]*; do
    [ "$(readlink "$p/ns/net" 2>/dev/null)" = "net:[$ino]" ] && echo "${p#/proc/}"
  done
  return 0
}
# Processes in node N's cgroups (its containers).
cgroup_pids() {
  local c
  for c in /sys/fs/cgroup/*/"$(ns_of "$1")"; do
    [ -d "$c" ] && find "$c" -name cgroup.procs -exec cat {} + 2>/dev/null
  done
  return 0
}

need_tools() {
  [ "$(id -u)" = 0 ] || die "must run as root"
  local t
  for t in docker dockerd containerd runc ip nsenter unshare setsid curl tar timeout hostname; do
    command -v "$t" >/dev/null || die "missing tool: $t; hint: .ci/run lists the Debian packages"
  done
  [ -x /bin/busybox ] || die "no /bin/busybox; hint: apt-get install busybox-static"
}

# A busybox root filesystem: a shell, wget, nslookup and httpd in every node.
mk_tool_image() {
  local r=$LAB/rootfs a
  mkdir -p "$r"/{bin,etc,tmp,www,root}
  chmod 1777 "$r/tmp"
  cp /bin/busybox "$r/bin/busybox"
  for a in $(/bin/busybox --list); do [ "$a" = busybox ] || ln -sf busybox "$r/bin/$a"; done
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' >"$r/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\n' >"$r/etc/group"
  tar -C "$r" -cf "$LAB/rootfs.tar" .
  rm -rf "$r"
}

mk_net() {
  local n ns
  ip netns add "$LABNS"
  ip -n "$LABNS" link set lo up
  ip -n "$LABNS" link add br0 type bridge
  ip -n "$LABNS" link set br0 up
  # Bridged lab traffic must not go through netfilter.
  nsenter --net="/run/netns/$LABNS" sh -c 'for f in /proc/sys/net/bridge/bridge-nf-call-*; do [ -w "$f" ] && echo 0 >"$f"; done; true'
  for n in $(nodes); do
    ns=$(ns_of "$n")
    ip netns add "$ns"
    stat -L -c %i "/run/netns/$ns" >"$LAB/netns-inode.$n"
    ip -n "$ns" link set lo up
    ip -n "$LABNS" link add "veth-n$n" type veth peer name eth0 netns "$ns"
    ip -n "$LABNS" link set "veth-n$n" master br0 up
    ip -n "$ns" addr add "$(ip_of "$n")/24" dev eth0
    ip -n "$ns" link set eth0 up
  done
}

write_daemon_json() {
  local n=$1 dir
  dir=$(dir_of "$n")
  cat >"$dir/daemon.json" <<JSON
{
  "data-root": "$dir/data",
  "exec-root": "$dir/exec",
  "pidfile": "$dir/dockerd.pid",
  "hosts": ["unix://$dir/docker.sock"],
  "bip": "10.97.$n.1/24",
  "default-address-pools": [{"base": "10.$((100 + n)).0.0/16", "size": 24}],
  "storage-driver": "overlay2",
  "exec-opts": ["native.cgroupdriver=cgroupfs"],
  "cgroup-parent": "/$(ns_of "$n")",
  "containerd-namespace": "$(ns_of "$n")",
  "containerd-plugins-namespace": "$(ns_of "$n")-plugins",
  "log-driver": "json-file",
  "log-opts": {"max-size": "10m", "max-file": "2"},
  "iptables": true,
  "ip-forward": true,
  "live-restore": false,
  "insecure-registries": ["$SUBNET.0/24"],
  "shutdown-timeout": 5
}
JSON
}

# Runs as setsid -> nsenter(net) -> unshare(mount, uts) -> sh -> dockerd. In
# the node's own mount namespace, our copies of the host engine's mounts are
# dropped (so the node never pins them) and /run/docker and /run/containerd
# are shadowed by tmpfs, so the node neither finds the host's containerd nor
# shares its shim sockets. DOCKER_SERVICE_PREFER_OFFLINE_IMAGE=1 (unless
# LAB_PULL=1): a service's task runs the image loaded into the node, with no
# registry lookup.
NODE_INIT='
set -e
hostname "$1"
awk "{print \$2}" /proc/self/mounts | grep -E "^/(var/lib/docker|run/docker|run/containerd)(/|\$)" | sort -r |
  while read -r m; do umount -l "$m" 2>/dev/null || true; done
mount -t tmpfs -o mode=0711,size=64m ctsw-run /run/docker
mount -t tmpfs -o mode=0711,size=64m ctsw-run /run/containerd
exec env DOCKER_SERVICE_PREFER_OFFLINE_IMAGE="$3" dockerd --config-file "$2"
'

start_node() {
  local n=$1 dir offline=1
  [ "${LAB_PULL:-}" = 1 ] && offline=
  dir=$(dir_of "$n")
  mkdir -p "$dir"
  write_daemon_json "$n"
  setsid nsenter --net="/run/netns/$(ns_of "$n")" -- \
    unshare --mount --uts --propagation slave -- \
    sh -c "$NODE_INIT" node-init "$(ns_of "$n")" "$dir/daemon.json" "$offline" \
    >"$dir/dockerd.log" 2>&1 </dev/null &
  echo $! >"$dir/launcher.pid"
}

# Whether node N's launcher still runs (not a zombie): from the fork to
# its exec of setsid, the launcher is a copy of this shell, whose command
# line names no config file, so dockerd_pid cannot see it yet; a busy
# machine stretches that moment.
launcher_alive() {
  local p state
  p=$(cat "$(dir_of "$1")/launcher.pid" 2>/dev/null) || return 1
  state=$(sed 's/.*) //' "/proc/$p/stat" 2>/dev/null | cut -d' ' -f1) || return 1
  [ -n "$state" ] && [ "$state" != Z ]
}

wait_engine() {
  local n=$1 i
  for i in $(seq 1 120); do
    alive_engine "$n" && return 0
    dockerd_pid "$n" >/dev/null || launcher_alive "$n" ||
      { tail -20 "$(dir_of "$n")/dockerd.log" >&2; die "dockerd of node $n exited"; }
    sleep 0.5
  done
  tail -20 "$(dir_of "$n")/dockerd.log" >&2
  die "dockerd of node $n did not answer within 60s"
}

wait_nodes_ready() {
  local i ready=0
  for i in $(seq 1 120); do
    ready=$(d 1 10 node ls --format '{{.Status}} {{.Availability}}' 2>/dev/null | grep -c '^Ready Active' || true)
    [ "$ready" = "$NODES" ] && return 0
    sleep 0.5
  done
  d 1 10 node ls >&2 || true
  die "only $ready/$NODES swarm nodes Ready after 60s"
}

# Runs the commands given, one per node, in parallel; fails if any failed.
each_node() {
  local n pids=() p
  for n in $(nodes); do "$@" "$n" & pids+=($!); done
  for p in "${pids[@]}"; do wait "$p" || return 1; done
}
load_images() { d "$1" 300 load -q -i "$LAB/images.tar" >/dev/null; }
import_tool() { d "$1" 120 import -c 'ENV PATH=/bin' -c 'CMD ["sh"]' "$LAB/rootfs.tar" "$TOOL_IMAGE" >/dev/null; }
join_node() {
  [ "$1" = 1 ] && return 0
  d "$1" 60 swarm join --token "$TOKEN" --advertise-addr "$(ip_of "$1")" \
    --listen-addr "$(ip_of "$1"):2377" "$(ip_of 1):2377" >/dev/null
}

cmd_up() {
  NODES=${1:-}
  shift || true
  case "$NODES" in [1-9]) ;; *) die "NODES must be 1..9" ;; esac
  need_tools
  [ ! -e "$LAB" ] || die "$LAB exists already"
  local t0 n p v
  t0=$(date +%s)
  mkdir -p "$LAB"
  chmod 700 "$LAB"
  # What existed before the lab, so that down restores just that.
  { for p in /run/netns /run/docker /run/containerd; do
      v=$(echo "$p" | tr a-z/ A-Z_); echo "PRE${v}=$([ -e "$p" ] && echo 1 || echo 0)"; done; } >"$LAB/state"
  echo "$NODES" >"$LAB/nodes"
  mkdir -p /run/docker /run/containerd
  if [ $# -gt 0 ]; then
    timeout 300 docker save -o "$LAB/images.tar" "$@" || die "saving $* from the host engine"
  fi
  mk_tool_image
  mk_net
  for n in $(nodes); do start_node "$n"; done
  for n in $(nodes); do wait_engine "$n"; done
  each_node import_tool || die "importing $TOOL_IMAGE"
  if [ $# -gt 0 ]; then
    each_node load_images || die "loading $* into the nodes"
    rm -f "$LAB/images.tar"
  fi
  d 1 60 swarm init --advertise-addr "$(ip_of 1)" --listen-addr "$(ip_of 1):2377" \
    --default-addr-pool "$SWARM_POOL" --default-addr-pool-mask-length 24 >/dev/null
  TOKEN=$(d 1 10 swarm join-token -q worker)
  each_node join_node || die "joining the swarm"
  wait_nodes_ready
  log "up: $NODES nodes in $(($(date +%s) - t0))s"
}

kill_pids() {
  local sig=$1 p
  shift
  for p in "$@"; do [ -n "$p" ] && kill "-$sig" "$p" 2>/dev/null || true; done
}

cmd_down() {
  local n p i pids ns c m any=0
  [ "$(id -u)" = 0 ] || die "must run as root"
  [ -d "$LAB" ] && any=1
  ip netns list 2>/dev/null | grep -q "^$PFX-" && any=1
  [ "$any" = 1 ] || return 0
  NODES=$(detect_nodes)

  # 1. Leave the swarm (which removes the task containers), then remove the
  #    other containers, so no dockerd leaves mounts or shims behind.
  for n in $(nodes); do
    alive_engine "$n" && { d "$n" 20 swarm leave --force >/dev/null 2>&1 || true; } &
  done
  wait
  for n in $(nodes); do
    if alive_engine "$n"; then
      c=$(d "$n" 10 ps -aq 2>/dev/null || true)
      [ -z "$c" ] || d "$n" 30 rm -f $c >/dev/null 2>&1 || true
    fi
  done

  # 2. Stop the dockerds (each stops its containerd); PIDs are proven ours
  #    before every signal.
  for n in $(nodes); do kill_pids TERM "$(dockerd_pid "$n" || true)"; done
  for i in $(seq 1 60); do
    c=0
    for n in $(nodes); do dockerd_pid "$n" >/dev/null && c=1; done
    [ "$c" = 0 ] && break
    sleep 0.5
  done
  for n in $(nodes); do kill_pids KILL "$(dockerd_pid "$n" || true)"; done

  # 3. Whatever is left in the nodes' namespaces or cgroups.
  for i in $(seq 1 11); do
    pids=()
    for n in $(nodes); do
      p=$(containerd_pid "$n" || true)
      [ -z "$p" ] || pids+=("$p")
      for p in $(netns_pids "$n") $(cgroup_pids "$n"); do pids+=("$p"); done
    done
    [ "${#pids[@]}" = 0 ] && break
    [ "$i" = 11 ] && { log "warning: processes still alive: ${pids[*]}"; break; }
    if [ "$i" -le 3 ]; then kill_pids TERM "${pids[@]}"; else kill_pids KILL "${pids[@]}"; fi
    sleep 1
  done

  # 4. The nodes' cgroups, in every hierarchy, deepest first.
  for c in /sys/fs/cgroup/*/"$PFX"-n[0-9]; do
    [ -d "$c" ] || continue
    for i in 1 2 3 4 5; do
      find "$c" -depth -type d -exec rmdir {} + 2>/dev/null || true
      [ -d "$c" ] || break
      sleep 0.5
    done
    [ -d "$c" ] && log "warning: could not remove cgroup $c"
  done

  # 5. The namespaces (the lab's takes the bridge and the veths with it).
  for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep -E "^$PFX-(lab|n[0-9]+)$" || true); do
    ip netns del "$ns" 2>/dev/null || log "warning: ip netns del $ns failed"
  done

  # 6. /run/netns, /run/docker and /run/containerd as they were before.
  if [ -f "$LAB/state" ]; then
    # shellcheck disable=SC1091
    . "$LAB/state"
    if [ "${PRE_RUN_NETNS:-1}" = 0 ] && [ -d /run/netns ] && [ -z "$(ls -A /run/netns)" ]; then
      while mountpoint -q /run/netns; do umount /run/netns || break; done
      rmdir /run/netns 2>/dev/null || true
    fi
    if [ "${PRE_RUN_DOCKER:-1}" = 0 ]; then rmdir /run/docker 2>/dev/null || true; fi
    if [ "${PRE_RUN_CONTAINERD:-1}" = 0 ]; then rmdir /run/containerd 2>/dev/null || true; fi
  fi

  # 7. Mounts under DIR in the host's mount namespace (normally none: the
  #    nodes' mounts were private to them).
  for m in $(awk '{print $2}' /proc/self/mounts | grep "^$LAB/" | sort -r || true); do
    umount -l "$m" 2>/dev/null || true
  done

  # 8. The files.
  rm -rf "$LAB"
}

case "$CMD" in
  up) cmd_up "$@" ;;
  down) cmd_down ;;
  cut)
    n=${1:?usage: cut DIR N}
    ip -n "$LABNS" link set "veth-n$n" down
    ;;
  kill-engine)
    n=${1:?usage: kill-engine DIR N}
    p=$(dockerd_pid "$n") || die "node $n has no dockerd of this lab"
    kill -KILL "$p"
    ;;
  nsexec)
    n=${1:?usage: nsexec DIR N COMMAND...}
    shift
    exec nsenter --net="/run/netns/$(ns_of "$n")" -- "$@"
    ;;
  *) usage ;;
esac
