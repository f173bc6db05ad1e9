"""`make demo`: stand up the `local` stack, preflight it, train the intent classifier on it, take it down.

Needs root (network namespaces, Docker daemons). The `local` stack uses the docker
runtime: the training image is built from the rendered Dockerfile (cached after the
first demo), and each host's own Docker daemon runs it from the rendered compose
file. One SSH connection per host serves every step (preflight, launch, watching).
The run's logs, record and model are copied to out/demo/<run>/; the NAS stand-in
keeps them too (`gpufleet down --purge` removes it).
"""

from __future__ import annotations

import contextlib
import re
import sys
import time
from pathlib import Path

from rich.console import Console

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gpufleet.cli.image_commands import ensure_stack_lock  # noqa: E402
from gpufleet.errors import GpufleetError  # noqa: E402
from gpufleet.inventory import state_dir  # noqa: E402
from gpufleet.launcher.connections import HostConnections  # noqa: E402
from gpufleet.launcher.jobs import Cluster, follow_run, log_tail, start_run  # noqa: E402
from gpufleet.launcher.preflight import run_preflight  # noqa: E402
from gpufleet.local import cluster_down, cluster_up, hostproc  # noqa: E402
from gpufleet.spec import load_spec  # noqa: E402

STACK = ROOT / "stacks" / "Pulumi.local.yaml"
EXAMPLE = ROOT / "examples" / "intent_classifier" / "train.py"
# One folder per demo: the NAS stand-in outlives `down`, and a folder holding a finished
# checkpoint would make the next demo resume at its last epoch instead of training.
CHECKPOINTS = f"/checkpoints/intent-classifier-{time.strftime('%Y%m%d-%H%M%S')}"
EPOCHS = 8
SHOWN = re.compile(r"intent_classifier:|gpufleet:|Error|error:")
ACCURACY = re.compile(r"final val_accuracy=([0-9.]+)")
console = Console(soft_wrap=True)  # a sentence stays one line in a pipe or a CI log


def step(message: str) -> None:
    console.print(f"[bold cyan]==>[/bold cyan] {message}", highlight=False)


def progress(message: str) -> None:
    console.print(f"    {message}", style="dim", highlight=False, markup=False)


def copy_out(cluster: Cluster, run_dir: str, target: Path) -> None:
    """Logs, run record and the model from host 0 (the NAS is shared) to this machine."""
    sftp = cluster.hosts.sftp(cluster.names[0])
    (target / "logs").mkdir(parents=True, exist_ok=True)
    sftp.get(f"{run_dir}/run.json", str(target / "run.json"))
    for name in cluster.names:
        sftp.get(f"{run_dir}/logs/{name}.log", str(target / "logs" / f"{name}.log"))
    for name in ("checkpoint.pt", "intent_classifier.ts", "labels.json"):
        sftp.get(f"{CHECKPOINTS}/{name}", str(target / name))


def main() -> int:
    started = time.monotonic()
    spec = load_spec(STACK)
    runtime = "a Docker daemon each, running the training image" if spec.local.runtime == "docker" else "venv"
    step(f"bringing up the '{spec.name}' stack: {len(spec.hosts)} hosts as network namespaces, {runtime}")
    try:
        # The stack's committed lock: the image installs exactly it (a missing one is made and said so).
        lock = ensure_stack_lock(STACK, spec) if spec.runs_image else None
        inventory = cluster_up(spec, ROOT, progress=progress, lock=lock)
    except GpufleetError as error:
        console.print(f"[red]error:[/red] {error}", highlight=False)
        with contextlib.suppress(GpufleetError):  # up rolls back itself; this is belt and braces
            cluster_down(spec, ROOT)
        return 1
    try:
        with HostConnections(inventory, state_dir(ROOT, spec.name)) as hosts:
            cluster = Cluster(spec, inventory, hosts)
            step("preflight on every host")
            report = run_preflight(cluster)
            console.print(report.table())
            for line in report.details():  # warnings too: the table says they are spelled out below
                console.print(line, highlight=False, markup=False)
            if report.failed:
                console.print("[red]preflight failed[/red]")
                return 1
            step(f"training the intent classifier on {len(spec.hosts)} hosts (rank 0's lines shown)")
            record = start_run(cluster, EXAMPLE, ["--epochs", str(EPOCHS), "--checkpoint-dir", CHECKPOINTS])
            lines: list[str] = []

            def show(line: str) -> None:
                lines.append(line)
                if SHOWN.search(line):
                    console.print(f"    {line}", highlight=False, markup=False)

            record = follow_run(cluster, record, write=show)
            run_dir = record.run_dir[cluster.names[0]]
            if record.state != "succeeded":
                failed = record.first_failed or cluster.names[0]
                console.print(f"[red]run {record.run} {record.state}[/red]; last lines of {failed}:")
                console.print(log_tail(cluster, record, failed), highlight=False, markup=False)
                return 1
            found = [ACCURACY.search(line) for line in lines]
            accuracy = next((float(m.group(1)) for m in found if m), None)
            target = ROOT / "out" / "demo" / record.run
            copy_out(cluster, run_dir, target)
    except GpufleetError as error:
        console.print(f"[red]error:[/red] {error}", highlight=False)
        return 1
    finally:
        step(f"taking the '{spec.name}' stack down")
        cluster_down(spec, ROOT)

    took = record.ended - record.started if record.ended else 0.0
    console.print()
    console.print(f"[bold green]validation accuracy: {accuracy}[/bold green] (8 intents; chance is 0.125)")
    console.print(f"training run {record.run}: {took:.1f} s on {len(spec.hosts)} hosts x 2 workers")
    console.print(
        f"on the cluster it lived in {run_dir} (logs/, run.json) and {CHECKPOINTS}/", highlight=False
    )
    shown = target.relative_to(ROOT)
    console.print(
        f"copied here: {shown}/logs/, {shown}/run.json, {shown}/intent_classifier.ts", highlight=False
    )
    nas = hostproc.nas_root(state_dir(ROOT, spec.name)).relative_to(ROOT)
    console.print(
        f"the NAS stand-in keeps them too: {nas}/ (gpufleet down --purge removes it)", highlight=False
    )
    console.print(f"demo finished in {time.monotonic() - started:.0f} s", highlight=False)
    return 0 if accuracy is not None else 1


if __name__ == "__main__":
    sys.exit(main())
