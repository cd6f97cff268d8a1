#!/usr/bin/env bash
# Install and start what dockyard needs; safe to run again (idempotent).
#
#   scripts/setup.sh             what the tests need (scripts/test runs this):
#                                everything below, plus chromium (browser tests),
#                                PostgreSQL with a local test role, iproute2, file,
#                                systemd-analyze, promtool, and .venv with
#                                .[server,postgres,test]
#   scripts/setup.sh --run-only  what running needs (scripts/up runs this):
#                                Debian's docker.io and busybox-static, a running
#                                dockerd, and .venv with .[server]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

log() { printf '[setup] %s\n' "$*" >&2; }
mode=test
case "${1:-}" in
  --run-only) mode=run ;;
  "") ;;
  *) echo "usage: scripts/setup.sh [--run-only]" >&2; exit 2 ;;
esac
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

need_pkgs=()
command -v dockerd >/dev/null 2>&1 || need_pkgs+=(docker.io)
# A static busybox for the demo image (ldd fails on a static binary).
{ [ -x /bin/busybox ] && ! ldd /bin/busybox >/dev/null 2>&1; } || need_pkgs+=(busybox-static)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need_pkgs+=(python3-venv)
if [ "$mode" = test ]; then
  command -v ip >/dev/null 2>&1 || need_pkgs+=(iproute2)
  command -v file >/dev/null 2>&1 || need_pkgs+=(file)
  [ -x /usr/bin/chromium ] || need_pkgs+=(chromium)  # browser tests (Playwright, no download)
  command -v pg_ctlcluster >/dev/null 2>&1 || need_pkgs+=(postgresql)  # store/HA tests
  command -v systemd-analyze >/dev/null 2>&1 || need_pkgs+=(systemd)  # unit file checks
fi
if [ "${#need_pkgs[@]}" -gt 0 ]; then
  log "installing Debian packages: ${need_pkgs[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
fi

if ! docker info >/dev/null 2>&1; then
  log "starting dockerd"
  $SUDO sh -c 'nohup dockerd >/var/log/dockerd.log 2>&1 &'
  for _ in $(seq 1 120); do
    docker info >/dev/null 2>&1 && break
    sleep 0.5
  done
  docker info >/dev/null 2>&1 || { log "dockerd did not start; see /var/log/dockerd.log"; exit 1; }
fi

# PostgreSQL (tests only): the store tests run on both backends and the HA tests
# need it. A local cluster on 127.0.0.1:5432 and a login role the tests use (they
# create and drop their own databases). Never for --run-only: that role's password
# is known.
if [ "$mode" = test ] && command -v pg_lsclusters >/dev/null 2>&1; then
  read -r pg_ver pg_name pg_port pg_status _ < <(pg_lsclusters -h | head -1) || true
  if [ -z "${pg_ver:-}" ]; then
    pg_ver="$(ls /usr/lib/postgresql | sort -V | tail -1)"
    log "creating PostgreSQL cluster $pg_ver/main"
    $SUDO pg_createcluster "$pg_ver" main >/dev/null
    read -r pg_ver pg_name pg_port pg_status _ < <(pg_lsclusters -h | head -1)
  fi
  if [ "$pg_status" != "online" ]; then
    log "starting PostgreSQL $pg_ver/$pg_name on port $pg_port"
    $SUDO pg_ctlcluster "$pg_ver" "$pg_name" start
  fi
  as_pg() { if [ "$(id -u)" = 0 ]; then su postgres -c "$1"; else sudo -u postgres sh -c "$1"; fi; }
  if ! as_pg "psql -p $pg_port -tAc \"SELECT 1 FROM pg_roles WHERE rolname='dockyard'\"" | grep -q 1; then
    as_pg "psql -q -p $pg_port -c \"CREATE ROLE dockyard LOGIN SUPERUSER PASSWORD 'dockyard'\""
  fi
fi

if [ ! -x .venv/bin/python ]; then
  log "creating .venv"
  python3 -m venv .venv
fi
# One stamp per set of extras, holding the pyproject.toml it was installed from;
# the test set includes the run set.
run_extras="server"
test_extras="server,postgres,test"
want="$(sha256sum pyproject.toml | cut -d' ' -f1)"
current() { [ -f ".venv/.dockyard-installed-$1" ] && [ "$(cat ".venv/.dockyard-installed-$1")" = "$want" ]; }
if [ "$mode" = test ]; then extras="$test_extras"; else extras="$run_extras"; fi
if ! { current "$extras" || { [ "$mode" = run ] && current "$test_extras"; }; } \
  || ! .venv/bin/python -c 'import dockyard, fastapi' 2>/dev/null; then
  log "installing dockyard[$extras] into .venv"
  .venv/bin/pip install -q --upgrade pip >/dev/null 2>&1 || true
  .venv/bin/pip install -q -e ".[$extras]"
  echo "$want" > ".venv/.dockyard-installed-$extras"
fi
rm -f .venv/.dockyard-installed  # the stamp of the single set before the split

if [ "$mode" = run ]; then
  log "ready (dockyard up builds the demo image dockyard/busybox:latest if missing)"
  exit 0
fi

# promtool for `promtool check metrics` in tests: only the binary, taken from
# Debian's prometheus package (no Prometheus service is installed or started).
if [ ! -x .venv/bin/promtool ] && ! command -v promtool >/dev/null 2>&1; then
  tmp="$(mktemp -d)"
  if (cd "$tmp" && apt-get download prometheus >/dev/null 2>&1); then
    dpkg-deb --fsys-tarfile "$tmp"/prometheus_*.deb | tar -x -C "$tmp" ./usr/bin/promtool
    install -m 0755 "$tmp/usr/bin/promtool" .venv/bin/promtool
  else
    log "promtool not available (apt-get download prometheus failed); its test will skip"
  fi
  rm -rf "$tmp"
fi

.venv/bin/python -m dockyard.testing.images >/dev/null
log "ready"
