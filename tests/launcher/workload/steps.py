"""A training stand-in that checkpoints every step to the NAS, for the recovery tests.

Each step all-reduces across every rank (so a dead peer breaks the step, as in
real training), then rank 0 writes ``state.json`` atomically. A run that finds
that file resumes after the step it records. ``--crash STEP:HOST:LOCAL_RANK``
(repeatable) makes that worker die at that step, once (a marker file in the
checkpoint folder remembers that it did).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist


def say(message: str) -> None:
    sys.stdout.write(message + "\n")  # one write per line: ranks share the log
    sys.stdout.flush()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--step-s", type=float, default=0.2)
    parser.add_argument("--checkpoint-dir", required=True)
    parser.add_argument("--crash", action="append", default=[])
    args = parser.parse_args()
    folder = Path(args.checkpoint_dir)
    host = os.environ["GPUFLEET_HOST"]
    local_rank = int(os.environ["LOCAL_RANK"])
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.set_num_threads(1)
    state_file = folder / "state.json"
    start = json.loads(state_file.read_text())["step"] if state_file.exists() else 0
    if rank == 0:
        folder.mkdir(parents=True, exist_ok=True)
        restart = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
        say(f"steps: {'resumed at' if start else 'starting at'} step {start} world={world} restart={restart}")
    crashes = {}
    for spec in args.crash:
        step, crash_host, crash_rank = spec.split(":")
        crashes[(int(step), crash_host, int(crash_rank))] = (
            folder / f"crashed-{step}-{crash_host}-{crash_rank}"
        )
    total = torch.zeros(1)
    for step in range(start + 1, args.steps + 1):
        marker = crashes.get((step, host, local_rank))
        if marker is not None:
            try:
                marker.touch(exist_ok=False)
            except FileExistsError:
                pass
            else:
                say(f"steps: crashing on purpose at step {step} on {host} rank {local_rank}")
                os._exit(3)
        value = torch.ones(1)
        dist.all_reduce(value)
        total += value
        time.sleep(args.step_s)
        if rank == 0:
            tmp = folder / f".state.json.tmp-{os.getpid()}"
            tmp.write_text(json.dumps({"step": step, "world": world}))
            os.replace(tmp, state_file)
            say(f"steps: step {step}/{args.steps} world={world}")
    dist.barrier()
    if rank == 0:
        say(f"steps: done steps={args.steps} world={world}")
    dist.destroy_process_group()
    sys.stdout.flush()
    os._exit(0)  # skip gloo's teardown at exit (it aborts now and then; all work is done)


if __name__ == "__main__":
    main()
