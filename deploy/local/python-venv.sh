#!/usr/bin/env bash
# Makes DIR/.venv from DIR/requirements.txt, once: the venv remembers the
# requirements it was made from and is made again only when they change.
# Used by the test setup (deploy/local/ensure-services.sh) and the benchmarks.
#
# Usage: deploy/local/python-venv.sh DIR [WHAT]   (WHAT names it in messages)
set -euo pipefail

dir=$(cd "$1" && pwd)
what=${2:-$dir}
venv=$dir/.venv
if cmp -s "$dir/requirements.txt" "$venv/requirements.installed" 2>/dev/null; then
    printf 'python-venv: %s already in %s\n' "$what" "$venv" >&2
    exit 0
fi
printf 'python-venv: installing %s into %s\n' "$what" "$venv" >&2
python3 -m venv "$venv"
"$venv/bin/pip" install -q --disable-pip-version-check -r "$dir/requirements.txt" >&2
cp "$dir/requirements.txt" "$venv/requirements.installed"
