#!/usr/bin/env bash
# `make run`: local Redis + PostgreSQL under .data/ (kept between runs), migrate, then serve.
# Ports default to 6390 (Redis) and 5440 (PostgreSQL); override with SERVICES_REDIS_PORT /
# SERVICES_PG_PORT (services already running from an earlier `make run` are reused as they are).
# Stop the services afterwards with: tests/services.sh stop .data
set -euo pipefail
cd "$(dirname "$0")/.."
export SERVICES_REDIS_PORT=${SERVICES_REDIS_PORT:-6390} SERVICES_PG_PORT=${SERVICES_PG_PORT:-5440}
# A persistent dev instance: keep fsync on (the test default turns it off).
SERVICES_PG_OPTS=${SERVICES_PG_OPTS:-"-c fsync=on"} SERVICES_REDIS_PERSIST=1 bash tests/services.sh start .data
# shellcheck disable=SC1091
. .data/env
export CHATD_REDIS_URL=${CHATD_REDIS_URL:-$CHATD_TEST_REDIS_URL}
export CHATD_DATABASE_URL=${CHATD_DATABASE_URL:-$CHATD_TEST_DATABASE_URL}
export CHATD_UPLOAD_DIR=${CHATD_UPLOAD_DIR:-.data/uploads}
if [ -z "${CHATD_JWT_SECRET:-}" ] && [ -z "${CHATD_JWT_PUBLIC_KEY:-}" ]; then
    export CHATD_JWT_SECRET=dev-secret-change-me
    echo "run-local: CHATD_JWT_SECRET unset, using the development secret 'dev-secret-change-me'" >&2
fi
mkdir -p "$CHATD_UPLOAD_DIR"
echo "run-local: redis $CHATD_REDIS_URL, postgres $CHATD_DATABASE_URL" >&2
build/chatd migrate
exec build/chatd serve "$@"
