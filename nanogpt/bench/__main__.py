"""`python -m nanogpt.bench`: the quick bench, printed as JSON (the CLI's `bench` command has the options)."""
import json

from nanogpt.bench import run_bench

print(json.dumps(run_bench(quick=True), indent=1, default=str))
