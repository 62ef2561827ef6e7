# syntax=docker/dockerfile:1
#
# The chit image: one `chit` binary (worker, sink, gateway, publish, topology,
# ...) on Debian bookworm-slim, run by tini as PID 1, as the numeric user
# 10001. Build from the repository root:
#
#   docker build -t chit:0.1.0 .
#
# The build stage compiles the release binary of `cargo build --release
# --locked --bin chit`. CI has no Docker engine and does not build this
# image: it lints this file (hadolint, deploy/k8s/validate.sh) and runs that
# same command (deploy/local/test.sh, last step).
# See docs/operations.md#container-image for the HEALTHCHECK and the ports.

ARG RUST_IMAGE=rust:1-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

FROM ${RUST_IMAGE} AS build
WORKDIR /src
# The whole workspace (.dockerignore leaves out target/, .git and the test
# tools' virtualenvs): every member's manifest is needed to resolve it, and
# patches/ holds a patched dependency.
COPY . .
# Cache mounts keep the registry and the target directory between builds;
# the binary is copied out of the cached target directory.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin chit \
    && install -D -m 0755 target/release/chit /out/chit

FROM ${RUNTIME_IMAGE} AS runtime
# tini forwards SIGTERM to chit (the worker drains on it) and reaps the
# children that command tasks leave behind; ca-certificates for amqps:// and
# https. Debian's security updates move the exact versions, so they are not
# pinned; rebuild the image to pick them up.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 chit \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/chit \
        --shell /usr/sbin/nologin chit \
    && install -d -o 10001 -g 10001 -m 0750 /var/lib/chit

COPY --from=build /out/chit /usr/local/bin/chit
COPY deploy/docker/healthcheck.sh /usr/local/bin/chit-healthcheck

# A worker serves /healthz, /readyz and /metrics here unless --health says
# otherwise; the HEALTHCHECK below asks this port. For a sink set
# HEALTHCHECK_PORT=8700, for the gateway HEALTHCHECK_PORT=8080.
ENV CHIT_HEALTH_ADDR=0.0.0.0:9464 \
    CHIT_DATA_DIR=/var/lib/chit \
    HOME=/var/lib/chit \
    HEALTHCHECK_PORT=9464 \
    HEALTHCHECK_PATH=/healthz
EXPOSE 9464 8700 8080
USER 10001:10001
WORKDIR /var/lib/chit

# GET http://127.0.0.1:$HEALTHCHECK_PORT$HEALTHCHECK_PATH must answer 200.
# Kubernetes ignores HEALTHCHECK and uses the probes in deploy/k8s.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["/usr/local/bin/chit-healthcheck"]

STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/chit"]
CMD ["--help"]
