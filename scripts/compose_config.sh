#!/usr/bin/env bash
# Validates docker-compose.yml with Compose's own parser (`config`: schema, interpolation,
# anchors and merges, references between services), without a Docker engine. Uses
# `docker compose` (v2) when the client has it, else Debian's docker-compose, installed when
# missing. The secrets run.sh writes into .env are placeholders here. tests/api/compose.rs
# checks the rest (settings, roles, files) against the binary.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '[compose] %s\n' "$*"; }

export JWT_SECRET=check SAGASHOP_ADMIN_TOKEN=check MYSQL_PASSWORD=check MYSQL_ROOT_PASSWORD=check

if docker compose version >/dev/null 2>&1; then
  compose=(docker compose)
else
  if ! command -v docker-compose >/dev/null; then
    log "installing docker-compose (Debian)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends docker-compose >/dev/null \
      || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends docker-compose >/dev/null; }
  fi
  compose=(docker-compose)
fi
log "$("${compose[@]}" version 2>/dev/null | head -n 1)"
# An empty env file: a developer's .env must not decide whether CI passes.
empty_env=$(mktemp)
trap 'rm -f "$empty_env"' EXIT
"${compose[@]}" --env-file "$empty_env" -f docker-compose.yml config --quiet
log "docker-compose.yml is valid"
