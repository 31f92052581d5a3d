#!/usr/bin/env bash
# Dependency policy (deny.toml): licenses, banned crates and allowed sources, checked by a
# pinned cargo-deny. The tool is installed once into a cache outside the checkout
# ($SAGASHOP_TOOLS, default /var/cache/sagashop-tools) and reinstalled only when missing or at
# another version, so CI does not rebuild it every run. Advisories are not checked: the
# advisory database cannot be fetched from this network (see deny.toml).
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_DENY_VERSION=0.20.2
TOOLS=${SAGASHOP_TOOLS:-/var/cache/sagashop-tools}
DENY="$TOOLS/bin/cargo-deny"

log() { printf '[deny] %s\n' "$*"; }

installed_version() { "$DENY" --version 2>/dev/null | awk '{print $2}'; }

if [ "$(installed_version)" != "$CARGO_DENY_VERSION" ]; then
  log "installing cargo-deny $CARGO_DENY_VERSION into $TOOLS"
  mkdir -p "$TOOLS"
  # Its own target dir, so the project's build cache is neither used nor disturbed.
  CARGO_TARGET_DIR="$TOOLS/target" cargo install cargo-deny \
    --version "$CARGO_DENY_VERSION" --locked --root "$TOOLS"
  rm -rf "$TOOLS/target"
fi
log "cargo-deny $(installed_version)"
# Duplicate versions are warnings; their inclusion graphs would fill the CI log.
"$DENY" check --hide-inclusion-graph --show-stats licenses bans sources
