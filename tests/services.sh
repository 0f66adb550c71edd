#!/usr/bin/env bash
# Starts/stops a private redis-server and PostgreSQL for tests and local runs.
#
#   tests/services.sh start DIR        start both (reusing data already in DIR), write DIR/env
#   tests/services.sh stop DIR         stop both
#   tests/services.sh stop-pg DIR      stop PostgreSQL only (fault tests)
#   tests/services.sh start-pg DIR     start it again on the SAME port
#   tests/services.sh stop-redis DIR   stop redis-server only
#   tests/services.sh start-redis DIR  start it again on the SAME port
#   tests/services.sh env DIR          print DIR/env
#
# Both listen on 127.0.0.1 only, on spare ports unless SERVICES_REDIS_PORT / SERVICES_PG_PORT
# are set (or ports were recorded in DIR/env by an earlier start; a service still running from
# an earlier start is reused as it is). PostgreSQL runs as the `postgres`
# user (it refuses root) with trust auth for 127.0.0.1 and a role + database `chatd`.
# DIR/env holds:
#   export CHATD_TEST_REDIS_URL=redis://127.0.0.1:PORT
#   export CHATD_TEST_DATABASE_URL=postgresql://chatd@127.0.0.1:PORT/chatd
#   export REDIS_PORT=… PG_PORT=… REDIS_PID=… PG_DATA=…
# Knobs: SERVICES_REDIS_PERSIST=1 (appendonly on, for local runs), SERVICES_PG_OPTS (extra
# postgres -c options; default turns fsync off, this is a throw-away test/dev instance).
set -euo pipefail

PGBIN=${PGBIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)}
SERVICES_PG_OPTS=${SERVICES_PG_OPTS:-"-c fsync=off -c full_page_writes=off"}

die() { echo "services.sh: $*" >&2; exit 1; }
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

port_in_use() { ss -Hltn "sport = :$1" 2>/dev/null | grep -q .; }

free_port() {
    local p i
    for i in $(seq 1 200); do
        p=$((20000 + RANDOM % 30000))
        if ! port_in_use "$p"; then echo "$p"; return 0; fi
    done
    die "no free port found"
}

load_env() {
    if [ -f "$DIR/env" ]; then
        # shellcheck disable=SC1091
        . "$DIR/env"
    fi
}

write_env() {
    local tmp="$DIR/env.tmp.$$"
    {
        echo "export CHATD_TEST_REDIS_URL=redis://127.0.0.1:$REDIS_PORT"
        echo "export CHATD_TEST_DATABASE_URL=postgresql://chatd@127.0.0.1:$PG_PORT/chatd"
        echo "export REDIS_PORT=$REDIS_PORT"
        echo "export PG_PORT=$PG_PORT"
        echo "export REDIS_PID=${REDIS_PID:-}"
        echo "export PG_DATA=$PG_DATA"
    } >"$tmp"
    mv "$tmp" "$DIR/env"
}

redis_alive() { [ -n "${REDIS_PID:-}" ] && kill -0 "$REDIS_PID" 2>/dev/null; }

start_redis() {
    mkdir -p "$DIR/redis"
    # Already running from an earlier start on DIR: reuse it (on the port it has).
    if redis_alive && [ -n "${RECORDED_REDIS_PORT:-}" ] &&
        redis-cli -h 127.0.0.1 -p "$RECORDED_REDIS_PORT" ping >/dev/null 2>&1; then
        REDIS_PORT=$RECORDED_REDIS_PORT
        return 0
    fi
    [ -n "${REDIS_PORT:-}" ] || REDIS_PORT=$(free_port)
    local persist=(--save "" --appendonly no)
    if [ "${SERVICES_REDIS_PERSIST:-0}" = 1 ]; then persist=(--save "" --appendonly yes); fi
    rm -f "$DIR/redis/redis.pid"
    redis-server --bind 127.0.0.1 --port "$REDIS_PORT" "${persist[@]}" \
        --dir "$DIR/redis" --daemonize yes --pidfile "$DIR/redis/redis.pid" \
        --logfile "$DIR/redis/redis.log" >/dev/null
    local i
    for i in $(seq 1 100); do
        if redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null | grep -q PONG; then
            break
        fi
        sleep 0.05
    done
    redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null | grep -q PONG ||
        die "redis did not start on $REDIS_PORT (see $DIR/redis/redis.log)"
    for i in $(seq 1 40); do [ -s "$DIR/redis/redis.pid" ] && break; sleep 0.05; done
    REDIS_PID=$(cat "$DIR/redis/redis.pid")
}

stop_redis() {
    if redis_alive; then
        kill "$REDIS_PID" 2>/dev/null || true
        local i
        for i in $(seq 1 100); do kill -0 "$REDIS_PID" 2>/dev/null || break; sleep 0.05; done
        kill -0 "$REDIS_PID" 2>/dev/null && kill -9 "$REDIS_PID" 2>/dev/null || true
    fi
    REDIS_PID=
}

pg_running() { [ -f "$PG_DATA/postmaster.pid" ] && as_pg "$PGBIN/pg_ctl" -D "$PG_DATA" status >/dev/null 2>&1; }

start_pg() {
    PG_DATA="$DIR/pg/data"
    mkdir -p "$DIR/pg/sock"
    chown -R postgres:postgres "$DIR/pg" 2>/dev/null || true
    if [ ! -f "$PG_DATA/PG_VERSION" ]; then
        as_pg "$PGBIN/initdb" -D "$PG_DATA" -U postgres -A trust -E UTF8 --locale=C.UTF-8 \
            --no-sync >"$DIR/pg/initdb.log" 2>&1 || die "initdb failed (see $DIR/pg/initdb.log)"
    fi
    if pg_running; then
        # Already running from an earlier start on DIR: reuse it (line 4 of postmaster.pid is
        # its port).
        PG_PORT=$(sed -n 4p "$PG_DATA/postmaster.pid")
        local i
        for i in $(seq 1 100); do
            "$PGBIN/pg_isready" -q -U postgres -d postgres -h 127.0.0.1 -p "$PG_PORT" && return 0
            sleep 0.05
        done
        die "postgres in $PG_DATA is running but not answering on $PG_PORT"
    fi
    [ -n "${PG_PORT:-}" ] || PG_PORT=$(free_port)
    # shellcheck disable=SC2086
    as_pg "$PGBIN/pg_ctl" -D "$PG_DATA" -l "$DIR/pg/postgres.log" -w -t 30 \
        -o "-p $PG_PORT -c listen_addresses=127.0.0.1 -k $DIR/pg/sock $SERVICES_PG_OPTS" \
        start >/dev/null || die "postgres did not start on $PG_PORT (see $DIR/pg/postgres.log)"
    local i
    for i in $(seq 1 100); do
        "$PGBIN/pg_isready" -q -U postgres -d postgres -h 127.0.0.1 -p "$PG_PORT" && break
        sleep 0.05
    done
    local psql=("$PGBIN/psql" -X -q -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -v ON_ERROR_STOP=1)
    if [ "$("${psql[@]}" -tAc "SELECT 1 FROM pg_roles WHERE rolname='chatd'")" != 1 ]; then
        "${psql[@]}" -c "CREATE ROLE chatd LOGIN"
    fi
    if [ "$("${psql[@]}" -tAc "SELECT 1 FROM pg_database WHERE datname='chatd'")" != 1 ]; then
        "${psql[@]}" -c "CREATE DATABASE chatd OWNER chatd"
    fi
}

stop_pg() {
    PG_DATA=${PG_DATA:-$DIR/pg/data}
    if [ -f "$PG_DATA/postmaster.pid" ]; then
        as_pg "$PGBIN/pg_ctl" -D "$PG_DATA" -m fast -w -t 30 stop >/dev/null 2>&1 || true
    fi
}

cmd=${1:-}
[ -n "$cmd" ] && [ -n "${2:-}" ] || { sed -n '2,20p' "$0"; exit 2; }
mkdir -p "$2"
DIR=$(cd "$2" && pwd)
# postgres must be able to traverse DIR (mktemp -d makes it 0700).
chmod a+x "$DIR"
# Ports chosen by the caller (SERVICES_*_PORT, deliberately not the REDIS_PORT/PG_PORT names
# that DIR/env exports, so a shell that sourced another DIR's env cannot leak them here) win
# over the ones recorded in DIR/env.
want_redis_port=${SERVICES_REDIS_PORT:-}
want_pg_port=${SERVICES_PG_PORT:-}
REDIS_PORT= PG_PORT= REDIS_PID= PG_DATA=
load_env
RECORDED_REDIS_PORT=$REDIS_PORT
REDIS_PORT=${want_redis_port:-$REDIS_PORT}
PG_PORT=${want_pg_port:-$PG_PORT}
PG_DATA=${PG_DATA:-$DIR/pg/data}

case "$cmd" in
start)
    start_redis
    write_env # a failing start_pg still leaves the Redis PID where `stop` finds it
    start_pg
    write_env
    ;;
stop)
    stop_redis
    stop_pg
    write_env
    ;;
start-redis) start_redis; write_env ;;
stop-redis) stop_redis; write_env ;;
start-pg) start_pg; write_env ;;
stop-pg) stop_pg ;;
env) cat "$DIR/env" ;;
*) die "unknown command $cmd" ;;
esac
