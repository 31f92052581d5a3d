#!/usr/bin/env bash
# Prepares the dashboard's browser test (tests/api/dashboard.rs): Debian's chromium (installed
# with apt-get only when /usr/bin/chromium is missing; never a downloaded browser) and the
# test's node modules (`npm ci` in tests/browser: playwright-core, pinned by its lock file).
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '[browser] %s\n' "$*"; }

if [ ! -x /usr/bin/chromium ]; then
  log "installing chromium from Debian"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null || true
  apt-get install -y -qq chromium >/dev/null
fi
log "$(/usr/bin/chromium --version 2>/dev/null || echo 'chromium: no version')"

if ! command -v npm >/dev/null 2>&1; then
  log "installing node and npm from Debian"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null
fi
# playwright-core never downloads a browser itself; this keeps any install hook from trying.
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1
(cd tests/browser && npm ci --no-audit --no-fund --loglevel=error)
log "tests/browser ready"
