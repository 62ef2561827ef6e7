#!/usr/bin/env bash
# The one command that runs chit's whole test suite on this machine:
# services first (deploy/local/ensure-services.sh), then formatting, build,
# every test target of the workspace and, for the whole suite, the
# Dockerfile's release binary. Broker tests always run: if RabbitMQ or
# PostgreSQL cannot be brought up, this fails instead of skipping them.
#
# Usage: deploy/local/test.sh [ARGS for cargo test...]
#   e.g. deploy/local/test.sh -- --nocapture
#        deploy/local/test.sh --test pipeline
set -euo pipefail

cd "$(dirname "$0")/../.."
if ! command -v cargo >/dev/null 2>&1 && [ -x "${HOME:-/root}/.cargo/bin/cargo" ]; then
    export PATH="${HOME:-/root}/.cargo/bin:$PATH"
fi
export RUST_BACKTRACE=1

step() { printf '\n==> %s\n' "$*"; }

step "services"
deploy/local/ensure-services.sh --with-python

step "cargo fmt --all -- --check"
if ! cargo fmt --version >/dev/null 2>&1; then
    echo "test.sh: rustfmt is missing; install it with: rustup component add rustfmt" >&2
    exit 1
fi
cargo fmt --all -- --check

# --locked: the dependency versions are Cargo.lock's, as in the Dockerfile's
# release build; a stale lock file fails here instead of being rewritten.
step "cargo build --locked --workspace --all-targets"
cargo build --locked --workspace --all-targets

step "wire-protocol tests: a Python client with pika only (tests/wire)"
CHIT_BIN="$PWD/target/debug/chit" tests/wire/run.sh

# --no-fail-fast: a failing test binary does not hide the results of the others;
# the exit status is still non-zero.
step "cargo test --locked --workspace --all-targets --no-fail-fast $*"
cargo test --locked --workspace --all-targets --no-fail-fast "$@"

# No Docker engine runs in CI: build the release binary the Dockerfile's
# build stage builds, with the same command, so a change that breaks only
# the optimised build fails here. Only for the whole suite (no arguments, as
# .ci/run calls it): a run of one test does not wait for an optimised build.
if [ "$#" -eq 0 ]; then
    step "cargo build --release --locked --bin chit (the Dockerfile's binary)"
    cargo build --release --locked --bin chit
fi
