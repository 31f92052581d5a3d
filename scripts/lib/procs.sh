# shellcheck shell=bash
# Processes a script started and recorded in pid files, sourced by scripts/cluster.sh (its
# nodes) and scripts/redis-cluster.sh (its Redis nodes), so that both read pid files and stop
# their processes the same careful way: never by name, never a pid that was recycled.
#
# The sourcing script defines, for a process ID (a node number, a port):
#   pid_file ID   the file that records its pid
#   node_pid ID   prints its pid while it runs (recorded_pid, then a check that the process
#                 is the script's own)
#   log MESSAGE   one line of progress

# Prints the pid recorded in FILE when it records one; that this process is the caller's is
# for the caller to check.
recorded_pid() {
  local pid
  [ -f "$1" ] || return 1
  pid=$(<"$1")
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  echo "$pid"
}

# stop_procs SECONDS ID...: SIGTERM (and SIGCONT, so that a paused one acts on it) to the
# running ones among the IDs, SIGKILL to those left after SECONDS; returns once all are gone,
# their pid files removed. Touches no process but theirs.
stop_procs() {
  local seconds=$1 id pid running=() killed=0
  shift
  local deadline=$((SECONDS + seconds))
  for id in "$@"; do
    if pid=$(node_pid "$id"); then
      kill -TERM "$pid" 2>/dev/null || true
      kill -CONT "$pid" 2>/dev/null || true
      running+=("$id")
    fi
  done
  while [ ${#running[@]} -gt 0 ]; do
    if [ "$killed" = 0 ] && [ "$SECONDS" -ge "$deadline" ]; then
      for id in "${running[@]}"; do
        if pid=$(node_pid "$id"); then
          log "node $id (pid $pid) still runs ${seconds}s after SIGTERM: SIGKILL"
          kill -KILL "$pid" 2>/dev/null || true
        fi
      done
      killed=1
    fi
    local left=()
    for id in "${running[@]}"; do
      if node_pid "$id" >/dev/null; then
        left+=("$id")
      else
        log "node $id stopped"
        rm -f "$(pid_file "$id")"
      fi
    done
    running=(${left[@]+"${left[@]}"})
    [ ${#running[@]} -eq 0 ] || sleep 0.1
  done
}
