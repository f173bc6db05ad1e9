"""The launcher on a real local cluster (2 namespace hosts x 2 CPU workers, real sshd, torchrun).

One cluster for the module (name t6-launch, 10.161.0.0/24). Every command runs
the real CLI in a subprocess from the cluster's project folder.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from gpufleet.inventory import KNOWN_HOSTS_FILE
from gpufleet.local.hostproc import nas_source
from gpufleet.local.keys import generate_ed25519
from gpufleet.local.names import host_namespace
from tests.conftest import PROJECT_ROOT, needs_root
from tests.launcher.faults import GPUFLEET, TrainingCluster
from tests.local.cluster import local_cluster

pytestmark = [needs_root("sshd", "nft", "ip"), pytest.mark.slow, pytest.mark.timeout(240)]

NAME = "t6-launch"
OCTET = 161
EXAMPLE = PROJECT_ROOT / "examples" / "intent_classifier" / "train.py"
ACCURACY_RE = re.compile(r"final val_accuracy=([0-9.]+)")


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TrainingCluster]:
    folder = tmp_path_factory.mktemp("launch")
    (folder / "Pulumi.yaml").write_text("name: launcher-test\nruntime: python\n")
    with local_cluster(folder, NAME, OCTET) as (spec, inventory, stack):
        yield TrainingCluster(folder, spec, inventory, stack)


def tagged_processes(run: str) -> list[int]:
    """Every process on this machine (all namespace hosts share its pid space) of the run."""
    needle = f"GPUFLEET_RUN_TAG={NAME}/{run}@".encode()
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                environ = Path(f"/proc/{entry}/environ").read_bytes()
            except OSError:
                continue
            if any(item.startswith(needle) for item in environ.split(b"\0")):
                found.append(int(entry))
    return found


def write_script(folder: Path, name: str, body: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(body)
    return path


def test_preflight_passes_on_a_good_cluster(project: TrainingCluster) -> None:
    result = project.cli("preflight")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "preflight passed" in result.stdout
    assert ": FAIL:" not in result.stdout  # no check failed (the legend names the marks)


def test_preflight_fails_on_a_missing_nas_mount(project: TrainingCluster) -> None:
    config = yaml.safe_load(project.stack.read_text())
    cluster = config["config"]["gpufleet:cluster"]
    cluster["nas"].append(
        {"name": "scratch", "server": f"10.{OCTET}.0.250", "export": "/export/scratch", "mount": "/scratch"}
    )
    other = project.folder / "missing-mount" / project.stack.name
    other.parent.mkdir(exist_ok=True)
    other.write_text(yaml.safe_dump(config, sort_keys=False))
    result = project.cli("preflight", stack=other)
    assert result.returncode == 1
    assert "/scratch (scratch) is missing" in result.stdout
    assert "preflight failed on node-0, node-1" in result.stderr


def test_the_example_trains_across_two_hosts_and_a_second_run_resumes(project: TrainingCluster) -> None:
    checkpoints = "/checkpoints/t6-intent"
    first = project.cli(
        "train", "--name", "intent-1", str(EXAMPLE), "--epochs", "6", "--checkpoint-dir", checkpoints
    )
    assert first.returncode == 0, first.stdout + first.stderr
    assert "world_size=4" in first.stdout
    accuracy = float(ACCURACY_RE.search(first.stdout).group(1))  # type: ignore[union-attr]
    assert accuracy > 0.4  # 8 intents: chance is 0.125
    for host in ("node-0", "node-1"):
        assert re.search(rf"^{host} +\| \[rank\d\]:", first.stdout, re.MULTILINE), (
            f"no rank lines from {host}"
        )
    record = project.record("intent-1")
    assert record["state"] == "succeeded"
    assert record["exit_codes"] == {"node-0": 0, "node-1": 0}
    assert str(record["spec_hash"]).startswith("sha256:")
    saved = nas_source(project.state, "checkpoints") / "t6-intent"
    assert (saved / "checkpoint.pt").is_file() and (saved / "intent_classifier.ts").is_file()

    second = project.cli(
        "train", "--name", "intent-2", str(EXAMPLE), "--epochs", "7", "--checkpoint-dir", checkpoints
    )
    assert second.returncode == 0, second.stdout + second.stderr
    assert "resumed from /checkpoints/t6-intent/checkpoint.pt at epoch 6" in second.stdout
    assert "epochs=6->7" in second.stdout


def test_one_failing_host_stops_the_run_everywhere_and_is_named(
    project: TrainingCluster, tmp_path: Path
) -> None:
    script = write_script(
        tmp_path / "failing",
        "fail_on_one.py",
        "import os, sys, time\n"
        "import torch.distributed as dist\n"
        "dist.init_process_group('gloo')\n"
        "if os.environ['GPUFLEET_HOST'] == 'node-1' and os.environ['LOCAL_RANK'] == '0':\n"
        "    print('failing on purpose', flush=True)\n"
        "    sys.exit(3)\n"
        "time.sleep(600)\n",
    )
    started = time.monotonic()
    result = project.cli("train", "--name", "fail-1", str(script))
    assert result.returncode != 0
    assert time.monotonic() - started < 90
    assert "host node-1 failed first" in result.stderr
    assert "failing on purpose" in result.stdout
    record = project.record("fail-1")
    assert record["first_failed"] == "node-1"
    states = {
        host: json.loads((project.runs() / "fail-1" / "hosts" / f"{host}.json").read_text())
        for host in ("node-0", "node-1")
    }
    assert states["node-0"]["reason"].startswith("stopped")
    assert abs(states["node-0"]["ended"] - states["node-1"]["ended"]) < 10
    assert tagged_processes("fail-1") == []


def _train_until_first_epoch(
    project: TrainingCluster, run: str, epochs: int, checkpoints: str, stderr: int
) -> tuple[subprocess.Popen[str], Path]:
    """`gpufleet train` of the example in the background, once host 0 logged its first epoch (90 s at most)."""
    controller = subprocess.Popen(
        [GPUFLEET, "train", "-f", str(project.stack), "--name", run, str(EXAMPLE), "--epochs", str(epochs),
         "--checkpoint-dir", checkpoints],
        cwd=project.folder,
        stdout=subprocess.DEVNULL,
        stderr=stderr,
        text=True,
    )  # fmt: skip
    log = project.runs() / run / "logs" / "node-0.log"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and f"epoch 1/{epochs}" not in (
        log.read_text() if log.exists() else ""
    ):
        time.sleep(0.2)
    return controller, log


def test_the_run_survives_the_controller_being_killed(project: TrainingCluster) -> None:
    run = "survivor-1"
    controller, log = _train_until_first_epoch(
        project, run, 6, "/checkpoints/t6-survivor", subprocess.DEVNULL
    )
    assert "epoch 1/6" in log.read_text()
    controller.send_signal(signal.SIGKILL)
    controller.wait()
    assert tagged_processes(run), "the run died with its controller"

    deadline = time.monotonic() + 120
    status = project.cli("status", run)
    while time.monotonic() < deadline and "succeeded" not in status.stdout:
        time.sleep(1)
        status = project.cli("status", run)
    assert re.search(rf"{run}.*succeeded", status.stdout), status.stdout
    logs = project.cli("logs", run)
    assert "epoch 6/6" in logs.stdout and "final val_accuracy=" in logs.stdout
    assert "world_size=4" in logs.stdout


def test_stop_leaves_no_training_process_on_any_host(project: TrainingCluster, tmp_path: Path) -> None:
    script = write_script(
        tmp_path / "sleeper",
        "sleeper.py",
        "import time\nimport torch.distributed as dist\ndist.init_process_group('gloo')\n"
        "print('up', flush=True)\ntime.sleep(600)\n",
    )
    started = project.cli("train", "--detach", "--name", "sleeper-1", str(script))
    assert started.returncode == 0, started.stderr
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(tagged_processes("sleeper-1")) < 2 * (1 + 1 + 2):
        time.sleep(0.2)
    assert tagged_processes("sleeper-1")
    stopped = project.cli("stop", "sleeper-1")
    assert stopped.returncode == 0, stopped.stderr
    assert tagged_processes("sleeper-1") == []
    status = project.cli("status", "sleeper-1")
    assert re.search(r"sleeper-1.*stopped", status.stdout), status.stdout


def test_a_host_key_mismatch_launches_nothing_anywhere(project: TrainingCluster, tmp_path: Path) -> None:
    known_hosts = project.state / KNOWN_HOSTS_FILE
    original = known_hosts.read_text()
    impostor = generate_ed25519().public_line("impostor").split()[:2]
    lines = [
        f"{line.split()[0]} {' '.join(impostor)}"
        if line.startswith(f"[{project.spec.hosts[1].address}]")
        else line
        for line in original.splitlines()
    ]
    assert lines != original.splitlines()
    script = write_script(tmp_path / "never", "never.py", "print('must not run')\n")
    before = set(os.listdir(project.runs())) if project.runs().exists() else set()
    try:
        known_hosts.write_text("\n".join(lines) + "\n")
        result = project.cli("train", "--name", "never-1", str(script))
    finally:
        known_hosts.write_text(original)
    assert result.returncode == 1
    assert "node-1" in result.stderr and "host key does not match" in result.stderr
    assert "nothing was started" in result.stderr
    after = set(os.listdir(project.runs())) if project.runs().exists() else set()
    assert after == before
    assert tagged_processes("never-1") == []


def test_sigterm_to_train_stops_the_run_on_every_host(project: TrainingCluster) -> None:
    run = "terminated-1"
    controller, _ = _train_until_first_epoch(project, run, 50, "/checkpoints/t6-terminated", subprocess.PIPE)
    controller.send_signal(signal.SIGTERM)
    _, stderr = controller.communicate(timeout=60)
    assert controller.returncode == 130, stderr
    assert "stopping run terminated-1 on every host" in stderr
    assert tagged_processes(run) == []
    assert project.record(run)["state"] == "stopped"


def test_preflight_fails_when_a_firewall_blocks_the_rendezvous_port(project: TrainingCluster) -> None:
    namespace = host_namespace(NAME, "node-0")
    port = project.spec.network.rdzv_port
    block = (
        "add table inet t6block\n"
        "add chain inet t6block input { type filter hook input priority -10; }\n"
        f"add rule inet t6block input tcp dport {port} drop\n"
    )
    subprocess.run(["ip", "netns", "exec", namespace, "nft", "-f", "-"], input=block, text=True, check=True)
    try:
        result = project.cli("preflight")
    finally:
        subprocess.run(
            ["ip", "netns", "exec", namespace, "nft", "delete", "table", "inet", "t6block"], check=True
        )
    assert result.returncode == 1
    assert f"node-1 rendezvous: FAIL: cannot connect to node-0's rendezvous port 10.{OCTET}.0.11:{port}" in (
        " ".join(result.stdout.split())  # detail lines wrap between words at the terminal's width
    )
    # The port is free again at once: a run can start right after a failed preflight.
    assert project.cli("preflight").returncode == 0
