#!/usr/bin/env bash
# Creates chit's broker users and sets their tags and permissions from
# definitions.json beside this script, on a broker that is already running,
# without touching the password of a user that exists. Re-run it after
# changing definitions.json. (`rabbitmqctl import_definitions
# definitions.json` also works, on a fresh broker: importing users without a
# password makes them passwordless, so an import on a live broker would lock
# every component out.)
#
# Usage: deploy/rabbitmq/apply.sh PASSWORD_DIR
#   PASSWORD_DIR has one file per user to create, named as the user
#   (chit-worker-command, ...), holding its password; the passwords go to
#   rabbitmqctl on stdin, never on a command line. A user that exists keeps
#   its password; a new user without a file is an error.
# Environment:
#   RABBITMQCTL  the rabbitmqctl to run, default `rabbitmqctl`; in Kubernetes
#                for example "kubectl exec -i -n chit chit-rabbitmq-server-0 -- rabbitmqctl"
#   CHIT_VHOST   the vhost, default the one in definitions.json (chit)
# Needs jq.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
defs=$here/definitions.json
[ $# -eq 1 ] || { sed -n '2,21p' "$0" >&2; exit 2; }
passwords=$1
command -v jq >/dev/null 2>&1 || { echo "apply.sh: needs jq (apt-get install jq)" >&2; exit 1; }
read -r -a ctl <<<"${RABBITMQCTL:-rabbitmqctl}"
vhost=${CHIT_VHOST:-$(jq -r '.vhosts[0].name' "$defs")}

if ! "${ctl[@]}" list_vhosts -q name | grep -qxF "$vhost"; then
    echo "apply.sh: adding vhost $vhost"
    "${ctl[@]}" add_vhost "$vhost" >/dev/null
fi
existing=$("${ctl[@]}" list_users -q | cut -f1)
# One field a line (jq's @tsv would double the regexes' backslashes).
while read -r user && read -r tags; do
    if ! grep -qxF "$user" <<<"$existing"; then
        [ -f "$passwords/$user" ] || { echo "apply.sh: no password file $passwords/$user for the new user $user" >&2; exit 1; }
        echo "apply.sh: adding user $user"
        "${ctl[@]}" add_user "$user" <"$passwords/$user" >/dev/null
    fi
    # shellcheck disable=SC2086 # the tags are words
    "${ctl[@]}" set_user_tags "$user" $tags </dev/null >/dev/null
done < <(jq -r '.users[] | .name, (.tags | if type == "array" then join(" ") else . end)' "$defs")
while read -r user && read -r configure && read -r write && read -r read; do
    echo "apply.sh: permissions of $user on $vhost"
    "${ctl[@]}" set_permissions -p "$vhost" "$user" "$configure" "$write" "$read" </dev/null >/dev/null
done < <(jq -r '.permissions[] | .user, .configure, .write, .read' "$defs")
