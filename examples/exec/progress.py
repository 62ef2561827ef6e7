#!/usr/bin/env python3
"""A chit exec worker for long work, done a step per run.

Each run does one step and answers IN_PROGRESS with how far it got; chit
runs it again after `callbackAfterSeconds`, handing that output back as
`outputData`. After `inputData.steps` steps (3 by default) it is COMPLETED.

Run it with:  chit worker exec progress -- python3 examples/exec/progress.py
"""

import json
import sys


def main() -> None:
    task = json.load(sys.stdin)
    given = task.get("inputData") or {}
    steps = int(given.get("steps", 3))
    done = int((task.get("outputData") or {}).get("done", 0)) + 1
    log = f"step {done} of {steps} (poll {task.get('pollCount', 0)})"
    if done < steps:
        result = {
            "status": "IN_PROGRESS",
            "output": {"done": done},
            "logs": [log],
            "callbackAfterSeconds": given.get("pollSeconds", 1),
        }
    else:
        result = {
            "status": "COMPLETED",
            "output": {"done": done, "message": f"all {steps} steps done"},
            "logs": [log],
        }
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
