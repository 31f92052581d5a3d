#!/usr/bin/env bash
# Makes sure the servers the tests talk to are up: MariaDB on 127.0.0.1:3306 (root, empty
# password over TCP). Installs it with apt-get when absent, starts it when down, and fails
# loudly when it cannot be reached. Later issues add Redis and NATS here.
set -euo pipefail

log() { printf '[services] %s\n' "$*"; }

wait_for() { # name, command...
  local name=$1; shift
  for _ in $(seq 1 100); do
    if "$@" >/dev/null 2>&1; then log "$name is up"; return 0; fi
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
}

ensure_mariadb
