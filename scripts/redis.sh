#!/usr/bin/env bash
# A private redis-server for the tests (and local runs), on 127.0.0.1 only.
#
# Usage:
#   eval "$(scripts/redis.sh)"     start it if needed and export REDIS_URL in this shell
#   source scripts/redis.sh        the same (sourcing never exits your shell)
#   scripts/redis.sh --print-url   start it if needed, print only the URL
#   scripts/redis.sh --stop        stop the server this script started
#
#   e.g.  eval "$(scripts/redis.sh)" && .venv/bin/python -m pytest tests/state -q
#
# Environment:
#   REDIS_TEST_PORT  port to listen on (default 6390)
#   REDIS_TEST_DB    database number in the printed URL (default 15, so a developer's
#                    db 0 is never flushed by the tests)
#
# Idempotent: when something already answers PING on the port, it is reused and
# nothing is started. Installs redis-server with apt-get when it is not on PATH.
# The server keeps nothing on disk (--save '' --appendonly no) and never evicts
# (--maxmemory-policy noeviction, as production should). Its pidfile and log live
# in the repository's .redis/ folder (gitignored).

_redis_sh_log() { printf 'redis.sh: %s\n' "$*" >&2; }

_redis_sh_ping() {
    # $1 = port. True when a Redis answers PONG there.
    if command -v redis-cli >/dev/null 2>&1; then
        [ "$(redis-cli -h 127.0.0.1 -p "$1" ping 2>/dev/null)" = "PONG" ]
        return
    fi
    # No redis-cli: speak RESP over bash's /dev/tcp, in a subshell so no fd leaks.
    (
        exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
        printf 'PING\r\n' >&3
        IFS= read -r -t 1 reply <&3 || exit 1
        [ "${reply%$'\r'}" = "+PONG" ]
    ) 2>/dev/null
}

_redis_sh_install() {
    command -v redis-server >/dev/null 2>&1 && return 0
    _redis_sh_log "redis-server not found; installing it with apt-get"
    local sudo=""
    if [ "$(id -u)" -ne 0 ]; then
        if command -v sudo >/dev/null 2>&1; then
            sudo="sudo"
        else
            _redis_sh_log "not root and no sudo: install redis-server yourself"
            return 1
        fi
    fi
    if ! command -v apt-get >/dev/null 2>&1; then
        _redis_sh_log "no apt-get here: install redis-server yourself"
        return 1
    fi
    $sudo apt-get update -qq >&2 && $sudo apt-get install -y -qq redis-server >&2 || return 1
    command -v redis-server >/dev/null 2>&1
}

_redis_sh_start() {
    # $1 = port, $2 = state dir
    local port="$1" dir="$2" i
    if _redis_sh_ping "$port"; then
        _redis_sh_log "reusing the redis already answering on 127.0.0.1:$port"
        return 0
    fi
    _redis_sh_install || return 1
    mkdir -p "$dir" || return 1
    redis-server \
        --bind 127.0.0.1 --port "$port" \
        --daemonize yes \
        --save '' --appendonly no \
        --maxmemory-policy noeviction \
        --dir "$dir" \
        --pidfile "$dir/redis-$port.pid" \
        --logfile "$dir/redis-$port.log" >&2 || {
        _redis_sh_log "redis-server failed to start; see $dir/redis-$port.log"
        return 1
    }
    # Bounded wait: 100 x 0.1 s.
    for i in $(seq 1 100); do
        if _redis_sh_ping "$port"; then
            _redis_sh_log "started redis-server on 127.0.0.1:$port (pid $(cat "$dir/redis-$port.pid" 2>/dev/null))"
            return 0
        fi
        sleep 0.1
    done
    _redis_sh_log "redis-server did not answer PING within 10 s; see $dir/redis-$port.log"
    return 1
}

_redis_sh_stop() {
    # $1 = port, $2 = state dir. Only stops the server whose pidfile we wrote.
    local pidfile="$2/redis-$1.pid" pid i
    if [ ! -f "$pidfile" ]; then
        _redis_sh_log "no pidfile at $pidfile: nothing of ours to stop"
        return 0
    fi
    pid="$(cat "$pidfile")"
    if kill "$pid" 2>/dev/null; then
        for i in $(seq 1 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        _redis_sh_log "stopped redis-server (pid $pid)"
    fi
    rm -f "$pidfile"
}

_redis_sh_main() {
    local port="${REDIS_TEST_PORT:-6390}" db="${REDIS_TEST_DB:-15}"
    local root dir url mode="${1:-export}"
    root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)" || return 1
    dir="$root/.redis"
    url="redis://127.0.0.1:$port/$db"
    case "$mode" in
        --stop) _redis_sh_stop "$port" "$dir"; return ;;
        --print-url) _redis_sh_start "$port" "$dir" || return 1; printf '%s\n' "$url" ;;
        export | --export) _redis_sh_start "$port" "$dir" || return 1; printf 'export REDIS_URL=%s\n' "$url" ;;
        -h | --help) sed -n '2,21p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; return 0 ;;
        *) _redis_sh_log "unknown option: $mode (try --help)"; return 2 ;;
    esac
    REDIS_URL="$url"
}

if [ "${BASH_SOURCE[0]}" != "$0" ]; then
    # Sourced: export into the caller's shell; never exit it, leave its options alone.
    if _redis_sh_main "$@" >/dev/null && [ "${1:-}" != "--stop" ]; then
        export REDIS_URL
        _redis_sh_log "REDIS_URL=$REDIS_URL"
    fi
else
    set -u
    _redis_sh_main "$@"
    exit $?
fi
