#!/bin/sh
# One-shot job of docker-compose.yml: joins the six Redis nodes into one Redis Cluster (three
# masters, one replica each). `redis-cli --cluster create` takes addresses, so the node names
# are resolved first. A cluster that already exists (a second `up`) is left as it is.
set -eu
NODES="redis-1 redis-2 redis-3 redis-4 redis-5 redis-6"

if redis-cli -h redis-1 cluster info | grep -q '^cluster_state:ok'; then
  echo "the Redis Cluster already exists"
  exit 0
fi
addresses=""
for node in $NODES; do
  ip=$(getent hosts "$node" | awk '{ print $1; exit }')
  [ -n "$ip" ] || { echo "cannot resolve $node" >&2; exit 1; }
  addresses="$addresses $ip:6379"
done
# shellcheck disable=SC2086 # one argument per address
redis-cli --cluster create $addresses --cluster-replicas 1 --cluster-yes
# Every node agrees within a minute, or the job fails (and `docker compose ps` shows it).
for node in $NODES; do
  tries=120
  until redis-cli -h "$node" cluster info | grep -q '^cluster_state:ok'; do
    tries=$((tries - 1))
    [ "$tries" -gt 0 ] || { echo "$node does not report cluster_state:ok" >&2; exit 1; }
    sleep 0.5
  done
done
echo "the Redis Cluster is up: $NODES"
