#!/usr/bin/env python3
"""Example legacy python task: prints a JSON summary of its arguments as the last stdout line."""
import json
import sys

print("collecting", file=sys.stderr)
print(json.dumps({"task": "report", "args": sys.argv[1:]}))
