#!/usr/bin/env bash
# A chit exec worker in bash with jq: greets the name the task carries.
#
# Run it with:  chit worker exec greet -- bash examples/exec/greet.sh
set -euo pipefail

task=$(cat)
name=$(jq -r '.inputData.name // "World"' <<<"$task")

# Pretty-printed on purpose: any one JSON object will do, over many lines too.
jq -n --arg name "$name" '{
  status: "COMPLETED",
  output: {message: ("Hello " + $name)},
  logs: ["Processed greeting for " + $name]
}'
