#!/usr/bin/env python3
"""A chit exec worker in Python: greets the name the task carries.

Run it with:  chit worker exec greet -- python3 examples/exec/greet.py
"""

import json
import sys


def main() -> None:
    task = json.load(sys.stdin)
    name = (task.get("inputData") or {}).get("name") or "World"
    result = {
        "status": "COMPLETED",
        "output": {"message": f"Hello {name}"},
        "logs": [f"Processed greeting for {name}"],
    }
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
