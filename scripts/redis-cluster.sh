#!/usr/bin/env bash
# A private 3-master Redis Cluster for the tests, on 127.0.0.1 only.
#
# Usage:
#   eval "$(scripts/redis-cluster.sh)"   start it if needed and export REDIS_CLUSTER_URL
#   scripts/redis-cluster.sh --stop      stop the nodes this script started
#
# Environment:
#   REDIS_CLUSTER_PORT  first of three consecutive ports (default: 17000 + 3 x
#                       (REDIS_TEST_PORT - 6390), so runs with their own Redis port get
#                       their own cluster too; 17000 for the default 6390)
#
# Idempotent: a cluster already answering "cluster_state:ok" on the first port is
# reused. Nodes keep nothing on disk beyond their cluster config (in .redis/), never
# evict (noeviction) and are created with `redis-cli --cluster create --cluster-yes`.
# Installs redis-server (which brings redis-cli) with apt-get when missing.
set -u

_rc_log() { printf 'redis-cluster.sh: %s\n' "$*" >&2; }

_rc_ok() { [ "$(redis-cli -h 127.0.0.1 -p "$1" cluster info 2>/dev/null | tr -d '\r' | grep -c '^cluster_state:ok$')" = 1 ]; }

_rc_main() {
    local test_port="${REDIS_TEST_PORT:-6390}"
    local base="${REDIS_CLUSTER_PORT:-$((17000 + 3 * (test_port - 6390)))}"
    local root dir port i nodes=()
    root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)" || return 1
    dir="$root/.redis/cluster-$base"
    if [ "${1:-}" = "--stop" ]; then
        for port in "$base" $((base + 1)) $((base + 2)); do
            if [ -f "$dir/$port.pid" ]; then kill "$(cat "$dir/$port.pid")" 2>/dev/null; rm -f "$dir/$port.pid"; fi
        done
        rm -rf "$dir"
        _rc_log "stopped the cluster on $base..$((base + 2))"
        return 0
    fi
    if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1; then
        # scripts/redis.sh knows how to install it (apt-get, with sudo when not root).
        REDIS_TEST_PORT="$test_port" bash "$root/scripts/redis.sh" >/dev/null || return 1
    fi
    if _rc_ok "$base"; then
        _rc_log "reusing the cluster answering on 127.0.0.1:$base"
    else
        rm -rf "$dir"; mkdir -p "$dir" || return 1
        for port in "$base" $((base + 1)) $((base + 2)); do
            redis-server --bind 127.0.0.1 --port "$port" --daemonize yes \
                --cluster-enabled yes --cluster-config-file "$dir/nodes-$port.conf" \
                --cluster-node-timeout 2000 \
                --save '' --appendonly no --maxmemory-policy noeviction \
                --dir "$dir" --pidfile "$dir/$port.pid" --logfile "$dir/$port.log" >&2 || return 1
            nodes+=("127.0.0.1:$port")
        done
        for i in $(seq 1 100); do
            redis-cli -h 127.0.0.1 -p $((base + 2)) ping >/dev/null 2>&1 && break
            sleep 0.1
        done
        redis-cli --cluster create "${nodes[@]}" --cluster-replicas 0 --cluster-yes >&2 || return 1
        # Bounded wait for every slot to be served: 100 x 0.1 s.
        for i in $(seq 1 100); do
            _rc_ok "$base" && break
            sleep 0.1
        done
        _rc_ok "$base" || { _rc_log "cluster did not become ok; see $dir/*.log"; return 1; }
        _rc_log "started a 3-master cluster on 127.0.0.1:$base..$((base + 2))"
    fi
    printf 'export REDIS_CLUSTER_URL=redis+cluster://127.0.0.1:%s\n' "$base"
}

_rc_main "$@"
