#!/usr/bin/env bash
# Makes sure the servers the tests and the local cluster talk to are up:
#   - MariaDB on 127.0.0.1:3306 (root, empty password over TCP);
#   - NATS on 127.0.0.1:4222, with JetStream;
#   - Redis on 127.0.0.1:6379 (the nodes' shared cache; `maxmemory-policy volatile-lru` when
#     started here). The six-node Redis Cluster is scripts/redis-cluster.sh.
# Installs each with apt-get when absent, starts it when down, and fails loudly when it cannot
# be reached. A NATS started here keeps its pid file, log and JetStream store under
# $SERVICES_STATE_DIR/nats (default /var/lib/sagashop-services/nats); a Redis its pid file and
# log under $SERVICES_STATE_DIR/redis. A server already up is never restarted or reconfigured.
set -euo pipefail

STATE_DIR=${SERVICES_STATE_DIR:-/var/lib/sagashop-services}

log() { printf '[services] %s\n' "$*"; }

wait_for() { # [--pid PID: give up as soon as it has exited] name, command...
  local pid=""
  if [ "$1" = --pid ]; then pid=$2; shift 2; fi
  local name=$1; shift
  for _ in $(seq 1 100); do
    if "$@" >/dev/null 2>&1; then log "$name is up"; return 0; fi
    if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then log "$name exited"; return 1; fi
    sleep 0.2
  done
  log "$name did not come up"; return 1
}

mariadb_ok() { mariadb -h127.0.0.1 -P3306 -uroot -e 'SELECT 1'; }

ensure_mariadb() {
  if ! command -v mariadbd >/dev/null 2>&1 && [ ! -x /usr/sbin/mariadbd ]; then
    log "installing mariadb-server"
    DEBIAN_FRONTEND=noninteractive apt-get install -y mariadb-server mariadb-client >/dev/null
  fi
  if mariadb_ok >/dev/null 2>&1; then log "MariaDB is up"; return 0; fi
  log "starting MariaDB"
  if [ ! -d /var/lib/mysql/mysql ]; then
    mariadb-install-db --user=mysql --datadir=/var/lib/mysql >/dev/null
  fi
  mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld 2>/dev/null || true
  start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd -- --user=mysql
  wait_for MariaDB mariadb_ok
  # Root must be able to log in over TCP with an empty password (Debian defaults to the socket).
  if ! mariadb_ok >/dev/null 2>&1; then
    mariadb -uroot -e "ALTER USER 'root'@'localhost' IDENTIFIED VIA mysql_native_password USING PASSWORD(''); FLUSH PRIVILEGES;"
    wait_for "MariaDB over TCP" mariadb_ok
  fi
  # The tests run several clusters at once, each node with its own pools (and an orchestrator's
  # lease connection): Debian's 151 connections run out.
  local max
  max=$(mariadb -h127.0.0.1 -P3306 -uroot -N -e 'SELECT @@max_connections')
  if [ "$max" -lt 1000 ]; then
    log "raising MariaDB max_connections from $max to 1000"
    mariadb -h127.0.0.1 -P3306 -uroot -e 'SET GLOBAL max_connections = 1000'
  fi
}

# A NATS server greets every new connection with its INFO line at once: a TCP check that also
# proves it is NATS (curl cannot speak the protocol, and the monitoring port is not enabled).
nats_ok() (
  exec 3<>/dev/tcp/127.0.0.1/4222 && IFS= read -r -t 1 line <&3 && [[ $line == INFO* ]]
)

nats_bin() { command -v nats-server || echo /usr/sbin/nats-server; }

ensure_nats() {
  local bin dir=$STATE_DIR/nats
  local pidfile=$dir/nats-server.pid
  if [ ! -x "$(nats_bin)" ]; then
    log "installing nats-server"
    DEBIAN_FRONTEND=noninteractive apt-get install -y nats-server >/dev/null
  fi
  bin=$(nats_bin)
  if nats_ok >/dev/null 2>&1; then log "NATS is up"; return 0; fi
  log "starting NATS (JetStream; pid, log and store in $dir)"
  mkdir -p "$dir/jetstream"
  # Detached like MariaDB above, so it outlives this script and the shell that ran it.
  start-stop-daemon --start --oknodo --background --make-pidfile --pidfile "$pidfile" --exec "$bin" -- \
    -a 127.0.0.1 -p 4222 -js -sd "$dir/jetstream" -l "$dir/nats-server.log"
  if ! wait_for --pid "$(cat "$pidfile")" NATS nats_ok; then
    log "the end of $dir/nats-server.log:"
    tail -n 5 "$dir/nats-server.log" >&2 || true
    return 1
  fi
}

redis_ok() { [ "$(redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null)" = PONG ]; }

ensure_redis() {
  local dir=$STATE_DIR/redis
  if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1; then
    log "installing redis-server and redis-tools"
    DEBIAN_FRONTEND=noninteractive apt-get install -y redis-server redis-tools >/dev/null
  fi
  if redis_ok; then log "Redis is up"; return 0; fi
  log "starting Redis (pid and log in $dir)"
  mkdir -p "$dir"
  # A cache: no persistence; entries carry a TTL and are evicted first, the Bloom filters
  # (no TTL) stay. Daemonized, so it outlives this script.
  redis-server --bind 127.0.0.1 --port 6379 --dir "$dir" --save "" --appendonly no \
    --maxmemory "${SERVICES_REDIS_MAXMEMORY:-512mb}" --maxmemory-policy volatile-lru \
    --daemonize yes --pidfile "$dir/redis.pid" --logfile "$dir/redis.log"
  if ! wait_for Redis redis_ok; then
    log "the end of $dir/redis.log:"
    tail -n 5 "$dir/redis.log" >&2 || true
    return 1
  fi
}

ensure_mariadb
ensure_nats
ensure_redis
