#!/usr/bin/env bash
# The compose deployment (docker-compose.yml), as the original's run.sh:
#   ./run.sh run    build the sagashop image and start everything in the background
#   ./run.sh stop   stop and remove the containers (the data volumes stay; `docker compose
#                   down --volumes` removes them too)
# The secrets the deployment needs (JWT_SECRET, SAGASHOP_ADMIN_TOKEN and the MySQL
# passwords) are generated into .env (mode 600) on the first run and kept there.
set -euo pipefail
cd "$(dirname "$0")"

log() { printf '[run] %s\n' "$*"; }
die() { printf '[run] error: %s\n' "$*" >&2; exit 1; }

# Docker Compose v2 (`docker compose`), else the standalone `docker-compose`.
compose() {
  if docker compose version >/dev/null 2>&1; then
    docker compose "$@"
  elif command -v docker-compose >/dev/null; then
    docker-compose "$@"
  else
    die "neither \`docker compose\` nor \`docker-compose\` is installed"
  fi
}

# Adds NAME=<random> to .env unless .env already sets NAME.
ensure_secret() {
  local name=$1
  if ! grep -q "^$name=" .env 2>/dev/null; then
    (umask 077 && printf '%s=%s\n' "$name" "$(head -c 32 /dev/urandom | base64 | tr -d '/+=\n')" >>.env)
    log "generated $name into .env"
  fi
}

cmd_run() {
  ensure_secret JWT_SECRET
  ensure_secret SAGASHOP_ADMIN_TOKEN
  ensure_secret MYSQL_PASSWORD
  ensure_secret MYSQL_ROOT_PASSWORD
  compose build
  compose up -d
  cat <<URLS
[run] started; \`docker compose ps\` shows each service's health. URLs (on this machine):
  API            http://localhost:8000/api/...   (the README's curl commands work as they are)
  dashboard      http://localhost:8000/dashboard (admin token: SAGASHOP_ADMIN_TOKEN in .env)
  Traefik        http://localhost:8081/dashboard/
  Prometheus     http://localhost:9090
  Jaeger         http://localhost:16686
URLS
}

# Compose needs the secrets to read the file even to stop it; without .env nothing was
# started by run.sh here.
cmd_stop() {
  [ -f .env ] || { log "no .env: ./run.sh run has not started anything here"; return; }
  compose down
}

case "${1:-}" in
  run) cmd_run ;;
  stop) cmd_stop ;;
  *) die "usage: ./run.sh run|stop" ;;
esac
