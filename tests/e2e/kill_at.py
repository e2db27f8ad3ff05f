"""Test harness: run `distill-engine` with a SIGKILL (or SIGTERM) injected at one chosen point.

    KILL_AT='{"kind": "record", "match": {"event": "train", "phase": "td1", "step": 3}}' \
        python tests/e2e/kill_at.py run RECIPE ...

Kinds (each counted within this process):
- "record": right after metrics.jsonl receives a record whose fields include `match`
  (a step, a phase end, a state written);
- "state_write": inside the `n`-th run-state write, after its first tensor file is on disk;
- "swap": between the two renames that replace an existing checkpoint directory named `name`;
- "signal": like "record", but sends SIGTERM (the run must stop cleanly and say how to resume);
- "shard": right after the `n`-th teacher-cache shard is renamed into place (SIGKILL, or SIGTERM
  with "signal": true), with `rows` rows a shard (so a tiny dataset has several).
The engine itself has no test hooks: this wraps its functions from outside.
"""

import json
import os
import signal
import sys

from distill_engine import cli, runstate, teacher_cache
from distill_engine.runner import Runner

point = json.loads(os.environ["KILL_AT"])
kind = point["kind"]


def die(sig=signal.SIGKILL):
    os.kill(os.getpid(), sig)


if kind in ("record", "signal"):
    original_log = Runner.log
    fired = []

    def log(self, record):
        original_log(self, record)
        if not fired and all(record.get(k) == v for k, v in point["match"].items()):
            fired.append(True)
            die(signal.SIGKILL if kind == "record" else signal.SIGTERM)

    Runner.log = log
elif kind == "state_write":
    original_save = runstate.save_file
    calls = [0]

    def save_file(tensors, path):
        original_save(tensors, path)
        calls[0] += 1
        if calls[0] == point["n"]:
            die()

    runstate.save_file = save_file
elif kind == "swap":
    original_replace = os.replace

    def replace(src, dst):
        original_replace(src, dst)
        if os.path.basename(str(src)) == point["name"] and str(dst).endswith(f".{point['name']}.old"):
            die()

    os.replace = replace
elif kind == "shard":
    teacher_cache.SHARD_ROWS = point["rows"]
    original_write = teacher_cache._write_shard
    shards = [0]

    def write_shard(path, tensors):
        original_write(path, tensors)
        shards[0] += 1
        if shards[0] == point.get("n"):
            die(signal.SIGTERM if point.get("signal") else signal.SIGKILL)

    teacher_cache._write_shard = write_shard
else:
    raise SystemExit(f"unknown kill kind {kind}")

sys.exit(cli.main(sys.argv[1:]))
