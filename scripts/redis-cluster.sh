#!/usr/bin/env bash
# A local six-node Redis Cluster on loopback (three masters, a replica each), for the nodes'
# cache (scripts/cluster.sh REDIS=cluster) and the tests:
#
#   scripts/redis-cluster.sh start    starts the nodes that are not running, creates the
#                                     cluster when it has never been formed, and waits until
#                                     every node reports cluster_state:ok; prints the seeds
#                                     (host:port,...). Idempotent: a running cluster is left as
#                                     it is; nodes restarted from their data rejoin on their own.
#   scripts/redis-cluster.sh stop     SIGTERM to the nodes started from REDIS_CLUSTER_DIR (by
#                                     their recorded pids, never by name), SIGKILL after 10 s
#   scripts/redis-cluster.sh status   each node's pid and cluster state; exits 0 when all are ok
#   scripts/redis-cluster.sh seeds    prints the seeds (host:port,...)
#
# Every node runs with `maxmemory-policy volatile-lru` (cache entries carry a TTL and are evicted
# first; the Bloom filters carry none and stay), no persistence, and its own folder
# $REDIS_CLUSTER_DIR/<port>/ holding its pid file, log and nodes.conf. Settings (environment):
#
#   REDIS_CLUSTER_DIR        /var/lib/sagashop-services/redis-cluster
#   REDIS_CLUSTER_PORTS      7000,7001,7002,7003,7004,7005   the six client ports
#   REDIS_CLUSTER_BUS_PORTS  each client port + 10000        the six cluster bus ports
#   REDIS_CLUSTER_MAXMEMORY  256mb                           per node
#   REDIS_CLUSTER_EXIT_WITH_PID  unset   a process (a test binary): `start` leaves a watcher
#                                        that runs `stop` once it is gone, so nodes its owner
#                                        never stops (a shared cluster, a killed run) exit too
set -euo pipefail

log() { printf '[redis-cluster] %s\n' "$*"; }
die() { printf '[redis-cluster] error: %s\n' "$*" >&2; exit 1; }
# recorded_pid, stop_procs: the pid-file handling this script shares with cluster.sh.
# shellcheck source=lib/procs.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/procs.sh"

DIR=$(realpath -m "${REDIS_CLUSTER_DIR:-/var/lib/sagashop-services/redis-cluster}")
IFS=, read -r -a PORTS <<<"${REDIS_CLUSTER_PORTS:-7000,7001,7002,7003,7004,7005}"
if [ -n "${REDIS_CLUSTER_BUS_PORTS:-}" ]; then
  IFS=, read -r -a BUS <<<"$REDIS_CLUSTER_BUS_PORTS"
else
  BUS=()
  for p in "${PORTS[@]}"; do BUS+=($((p + 10000))); done
fi
MAXMEMORY=${REDIS_CLUSTER_MAXMEMORY:-256mb}
[ ${#PORTS[@]} -eq 6 ] || die "REDIS_CLUSTER_PORTS must list six ports, not '${PORTS[*]}'"
[ ${#BUS[@]} -eq 6 ] || die "REDIS_CLUSTER_BUS_PORTS must list six ports, not '${BUS[*]}'"
for p in "${PORTS[@]}" "${BUS[@]}"; do
  [[ $p =~ ^[1-9][0-9]{0,4}$ ]] && [ "$p" -le 65535 ] || die "not a port: '$p'"
done

ensure_redis() {
  command -v redis-server >/dev/null && command -v redis-cli >/dev/null && return
  log "installing redis-server and redis-tools"
  DEBIAN_FRONTEND=noninteractive apt-get install -y redis-server redis-tools >/dev/null
}

node_dir() { echo "$DIR/$1"; }
pid_file() { echo "$DIR/$1/redis.pid"; }
cli() { local port=$1; shift; redis-cli -h 127.0.0.1 -p "$port" "$@"; }

# Prints the pid of the node on PORT while it runs. The pid is believed only when that
# process is a redis-server serving that port, so a recycled pid is never taken for it.
node_pid() {
  local pid
  pid=$(recorded_pid "$(pid_file "$1")") || return 1
  tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" | grep -q "redis-server.*:$1\b" || return 1
  echo "$pid"
}

port_taken() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

launch() {
  local port=$1 bus=$2 dir
  dir=$(node_dir "$port")
  mkdir -p "$dir"
  if port_taken "$port"; then die "port $port is in use by another process"; fi
  redis-server --bind 127.0.0.1 --port "$port" --cluster-enabled yes --cluster-port "$bus" \
    --cluster-config-file "$dir/nodes.conf" --cluster-node-timeout 2000 --dir "$dir" \
    --save "" --appendonly no --maxmemory "$MAXMEMORY" --maxmemory-policy volatile-lru \
    --daemonize yes --pidfile "$(pid_file "$port")" --logfile "$dir/redis.log"
  local _
  for _ in $(seq 1 100); do
    if [ "$(cli "$port" ping 2>/dev/null)" = PONG ]; then log "node $port started (pid $(node_pid "$port" || echo ?))"; return 0; fi
    sleep 0.1
  done
  tail -n 20 "$dir/redis.log" >&2 || true
  die "node $port did not come up"
}

state_of() { cli "$1" cluster info 2>/dev/null | tr -d '\r' | sed -n 's/^cluster_state://p'; }
known_nodes() { cli "$1" cluster info 2>/dev/null | tr -d '\r' | sed -n 's/^cluster_known_nodes://p'; }
seeds() { local IFS=,; local s=(); for p in "${PORTS[@]}"; do s+=("127.0.0.1:$p"); done; echo "${s[*]}"; }

all_ok() {
  local p
  for p in "${PORTS[@]}"; do [ "$(state_of "$p")" = ok ] || return 1; done
}

watch_file() { echo "$DIR/owner-watch.pid"; }

# Prints the pid of the watcher `start` left (REDIS_CLUSTER_EXIT_WITH_PID) while it runs;
# believed only when that process is such a watcher.
watcher_pid() {
  local pid
  pid=$(recorded_pid "$(watch_file)") || return 1
  tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" | grep -q "redis-cluster-watch" || return 1
  echo "$pid"
}

# Leaves a watcher (its own session, stdio on a log so that a caller reading this script's
# output is not held) that waits for process OWNER to be gone, then stops the nodes.
watch_owner() {
  local owner=$1
  [[ $owner =~ ^[0-9]+$ ]] || die "REDIS_CLUSTER_EXIT_WITH_PID is not a pid: '$owner'"
  if watcher_pid >/dev/null; then return 0; fi
  setsid bash -c 'echo $$ >"$3"; tail --pid="$1" -s 0.2 -f /dev/null; exec "$2" stop' \
    redis-cluster-watch "$owner" "$(realpath "$0")" "$(watch_file)" \
    </dev/null >>"$DIR/owner-watch.log" 2>&1 &
}

cmd_start() {
  ensure_redis
  mkdir -p "$DIR"
  # Before the first node, so that a start that fails half-way is stopped with its owner too.
  if [ -n "${REDIS_CLUSTER_EXIT_WITH_PID:-}" ]; then watch_owner "$REDIS_CLUSTER_EXIT_WITH_PID"; fi
  local i
  for i in "${!PORTS[@]}"; do
    if node_pid "${PORTS[$i]}" >/dev/null; then continue; fi
    launch "${PORTS[$i]}" "${BUS[$i]}"
  done
  if all_ok; then log "cluster is ok: $(seeds)"; return 0; fi
  # Never formed (every node knows only itself): create it. Otherwise nodes restarted from
  # their nodes.conf find each other again; wait for that.
  local fresh=1
  for i in "${PORTS[@]}"; do [ "$(known_nodes "$i")" = 1 ] || fresh=0; done
  if [ "$fresh" = 1 ]; then
    log "creating the cluster (3 masters, 1 replica each)"
    local addrs=()
    for i in "${PORTS[@]}"; do addrs+=("127.0.0.1:$i"); done
    redis-cli --cluster create "${addrs[@]}" --cluster-replicas 1 --cluster-yes >"$DIR/create.log" 2>&1 \
      || { cat "$DIR/create.log" >&2; die "redis-cli --cluster create failed"; }
  fi
  for _ in $(seq 1 300); do
    if all_ok; then log "cluster is ok: $(seeds)"; return 0; fi
    sleep 0.1
  done
  cmd_status || true
  die "the cluster is not ok after 30 s"
}

cmd_stop() {
  local pid
  stop_procs 10 "${PORTS[@]}"
  # A watcher left by `start` has nothing more to stop (unless this is it, stopping).
  if pid=$(watcher_pid) && [ "$pid" != $$ ]; then kill -TERM -- "-$pid" 2>/dev/null || true; fi
  rm -f "$(watch_file)"
}

cmd_status() {
  local p pid all=0 state
  for p in "${PORTS[@]}"; do
    pid=$(node_pid "$p") || pid=-
    state=$(state_of "$p")
    [ "$state" = ok ] || all=1
    printf 'node 127.0.0.1:%s  pid %-7s  cluster_state %s\n' "$p" "$pid" "${state:-down}"
  done
  return $all
}

case "${1:-}" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  seeds) seeds ;;
  *) die "usage: scripts/redis-cluster.sh start|stop|status|seeds" ;;
esac
