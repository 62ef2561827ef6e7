#!/bin/bash
# The chit image's HEALTHCHECK: GET http://127.0.0.1:$HEALTHCHECK_PORT$HEALTHCHECK_PATH
# (default 9464 and /healthz, a worker's --health address) and exit 0 on a
# 200, 1 otherwise. Plain bash (/dev/tcp), so the image needs no curl.
#   worker:  chit worker --health 0.0.0.0:9464 ...   (the image's default)
#   sink:    HEALTHCHECK_PORT=8700 (its --http port)
#   gateway: HEALTHCHECK_PORT=8080
set -u
port=${HEALTHCHECK_PORT:-9464}
path=${HEALTHCHECK_PATH:-/healthz}
exec 3<>"/dev/tcp/127.0.0.1/$port" || exit 1
printf 'GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n' "$path" >&3
IFS= read -r -t 5 status <&3 || exit 1
case "$status" in
    "HTTP/1."?" 200"*) exit 0 ;;
    *) echo "chit-healthcheck: 127.0.0.1:$port$path answered: ${status%$'\r'}" >&2; exit 1 ;;
esac
