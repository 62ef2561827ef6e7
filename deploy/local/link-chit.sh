#!/usr/bin/env bash
# Puts `chit` on the PATH: a symlink in cargo's bin directory (on the PATH
# since rustup's set-up) to the binary this checkout built. An existing
# `chit` there that is not such a link is left alone, with a note.
#
# Usage: deploy/local/link-chit.sh [BINARY]   (default target/release/chit)
set -euo pipefail

cd "$(dirname "$0")/../.."
binary="$(realpath "${1:-${CARGO_TARGET_DIR:-target}/release/chit}")"
bin_dir="${CARGO_HOME:-${HOME:-/root}/.cargo}/bin"
link="$bin_dir/chit"

[ -x "$binary" ] || { echo "link-chit.sh: no binary at $binary (build it first)" >&2; exit 1; }
mkdir -p "$bin_dir"
if [ -e "$link" ] && [ ! -L "$link" ]; then
    echo "link-chit.sh: $link exists and is not a link; leaving it (run $binary directly)" >&2
    exit 0
fi
ln -sfn "$binary" "$link"
echo "chit: $link -> $binary"
case ":$PATH:" in
    *":$bin_dir:"*) ;;
    *) echo "chit: add $bin_dir to your PATH (. \"\$HOME/.cargo/env\") to run it as \`chit\`" ;;
esac
