#!/usr/bin/env bash
# Installs everything chatd needs to build, run and test on a fresh Debian 12 machine (as root).
# Idempotent: skips apt-get when every package is present and npm ci when node_modules matches.
set -euo pipefail
cd "$(dirname "$0")/.."

PKGS="build-essential pkg-config clang libclang-rt-14-dev libwebsockets-dev libwebsockets-evlib-uv
  libuv1-dev libhiredis-dev libpq-dev libcjson-dev libjwt-dev libcurl4-openssl-dev libssl-dev
  libcmocka-dev redis-server postgresql postgresql-contrib curl git util-linux iproute2"
# Node.js: Debian's nodejs + npm unless a node/npm is already installed (for example a
# nodejs package from another source that bundles npm and conflicts with Debian's npm).
command -v node >/dev/null 2>&1 || PKGS="$PKGS nodejs"
command -v npm >/dev/null 2>&1 || PKGS="$PKGS npm"
missing=""
for p in $PKGS; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  if [ "$(id -u)" != 0 ]; then echo "install-deps: need root to apt-get install:$missing" >&2; exit 1; fi
  echo "install-deps: apt-get install$missing" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi
# The Debian redis/postgresql packages may start system services; chatd's scripts never use them.

if [ -f package-lock.json ]; then
  stamp=node_modules/.chatd-lock
  if [ ! -f "$stamp" ] || ! cmp -s package-lock.json "$stamp"; then
    echo "install-deps: npm ci" >&2
    npm ci --no-audit --no-fund --loglevel=error >&2
    cp package-lock.json "$stamp"
  fi
fi
