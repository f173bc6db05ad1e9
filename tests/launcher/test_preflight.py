"""Preflight judgement (pure): facts and check results in, one status per host and check out."""

from __future__ import annotations

import signal
import subprocess
import sys
from typing import Any

import pytest

from gpufleet.facts import FACTS_VERSION, HostFacts, parse_facts
from gpufleet.launcher.environment import HostEnvironment
from gpufleet.launcher.preflight import (
    CHECKS,
    PreflightReport,
    check_clock,
    check_cuda,
    check_memlock,
    check_nas,
    check_rdma,
    check_rendezvous,
    check_shm,
    check_versions,
    evaluate,
    listener_kill_command,
)
from gpufleet.spec import ClusterSpec
from tests.conftest import stack_spec


def facts(**changes: Any) -> HostFacts:
    data: dict[str, Any] = {
        "facts_version": FACTS_VERSION,
        "python": "3.11.2",
        "torch": {"version": "2.13.0", "cuda": None, "cuda_available": False},
        "memlock": {"soft": 8388608, "hard": 8388608},
        "shm_bytes": 16 << 30,
    }
    data.update(changes)
    return parse_facts(data, "test")


MANIFEST = "sha256:" + "a" * 64
GOOD_NAS = {
    "/data": {"exists": True, "readable": True},
    "/checkpoints": {"exists": True, "readable": True, "writable": True},
}


def test_a_good_cpu_cluster_passes_and_gpu_checks_are_skipped_not_passed() -> None:
    spec = stack_spec("local")
    names = [h.name for h in spec.hosts]
    results = evaluate(
        spec,
        facts={n: facts() for n in names},
        checks={n: {"nas": GOOD_NAS, "rdzv": {"ok": True, "ms": 0.4}} for n in names},
        listener={"bound": True},
        offsets={n: 0.01 for n in names},
        findings=[],
        environments={n: HostEnvironment(n, MANIFEST, MANIFEST) for n in names},
        declared_manifest=MANIFEST,
    )
    report = PreflightReport(hosts=names, results=results)
    assert not report.failed
    assert all(set(results[n]) == set(CHECKS) for n in names)
    assert results["node-0"]["cuda"].status == "skipped"
    assert results["node-0"]["rdma"].status == "skipped"
    assert results["node-1"]["rendezvous"].status == "ok"


@pytest.mark.parametrize(
    ("nas", "needle"),
    [
        pytest.param(
            {"/data": GOOD_NAS["/data"]}, "/checkpoints (checkpoints) is missing", id="missing-mount"
        ),
        pytest.param(
            {
                **GOOD_NAS,
                "/checkpoints": {"exists": True, "readable": True, "writable": False, "error": "EROFS"},
            },
            "/checkpoints is not writable",
            id="read-only-where-writable-declared",
        ),
        pytest.param(
            {**GOOD_NAS, "/data": {"exists": True, "readable": False, "error": "EACCES"}},
            "/data is not readable",
            id="unreadable",
        ),
    ],
)
def test_nas_problems_fail(nas: dict[str, Any], needle: str) -> None:
    check = check_nas(stack_spec("local"), nas)
    assert check.status == "fail"
    assert needle in check.detail


def test_a_read_only_share_need_not_be_writable() -> None:
    assert check_nas(stack_spec("local"), GOOD_NAS).status == "ok"


def test_no_shares_is_skipped() -> None:
    spec = stack_spec("local").model_copy(update={"nas": []})
    assert check_nas(spec, {}).status == "skipped"


def test_unreachable_rendezvous_port_fails_on_the_other_host() -> None:
    spec = stack_spec("local")
    check = check_rendezvous(spec, "node-1", {"bound": True}, {"ok": False, "error": "timed out"})
    assert check.status == "fail"
    assert f"{spec.hosts[0].address}:{spec.network.rdzv_port}" in check.detail
    assert "firewall" in check.detail


@pytest.mark.parametrize(
    ("declared", "host_facts", "cuda", "status", "needle"),
    [
        pytest.param(0, facts(), None, "skipped", "0 GPUs declared", id="no-gpus-skipped"),
        pytest.param(
            8,
            facts(gpus=[{"name": "H100", "index": i} for i in range(8)]),
            {"device_count": 0},
            "fail",
            "lacks GPU access",
            id="nvidia-smi-sees-gpus-torch-does-not",
        ),
        pytest.param(8, facts(), {"device_count": 4, "matmul": True}, "fail", "4 GPUs", id="too-few"),
        pytest.param(2, facts(), {"device_count": 2, "matmul": False}, "fail", "matmul", id="matmul-fails"),
        pytest.param(2, facts(), {"device_count": 2, "matmul": True}, "ok", "matmul ok", id="good"),
    ],
)
def test_cuda(declared: int, host_facts: HostFacts, cuda: Any, status: str, needle: str) -> None:
    check = check_cuda(declared, host_facts, cuda)
    assert check.status == status
    assert needle in check.detail + check.summary


def test_versions_must_match_host_zero() -> None:
    by_host = {"node-0": facts(), "node-1": facts(torch={"version": "2.12.0"})}
    assert check_versions("node-0", dict(by_host), "node-0").status == "ok"
    mismatch = check_versions("node-1", dict(by_host), "node-0")
    assert mismatch.status == "fail"
    assert "torch 2.12.0 vs 2.13.0" in mismatch.detail


def test_missing_torch_fails() -> None:
    assert check_versions("a", {"a": facts(torch=None)}, "a").status == "fail"


@pytest.mark.parametrize(
    ("offset", "status"),
    [
        pytest.param(0.02, "ok", id="close"),
        pytest.param(-0.5, "warn", id="drifting"),
        pytest.param(3.0, "fail", id="off"),
        pytest.param(None, "fail", id="unknown"),
    ],
)
def test_clock_offset(offset: float | None, status: str) -> None:
    assert check_clock(offset).status == status


def _fabric(spec: ClusterSpec, fabric: str) -> ClusterSpec:
    return spec.model_copy(update={"network": spec.network.model_copy(update={"fabric": fabric})})


def test_memlock_must_be_unlimited_on_rdma_only() -> None:
    spec = stack_spec("local")
    # The spec asks for unlimited, the host caps it (a sandbox without CAP_SYS_RESOURCE): a warning.
    assert check_memlock(spec, facts()).status == "warn"
    not_asked = spec.model_copy(
        update={"container": spec.container.model_copy(update={"memlock_unlimited": False})}
    )
    assert check_memlock(not_asked, facts()).status == "ok"
    assert check_memlock(_fabric(spec, "infiniband"), facts()).status == "fail"
    unlimited = facts(memlock={"soft": "unlimited", "hard": "unlimited"})
    assert check_memlock(_fabric(spec, "infiniband"), unlimited).status == "ok"


def test_small_shm_fails_on_gpu_hosts() -> None:
    spec = stack_spec("local")
    small = facts(shm_bytes=64 << 20)
    assert check_shm(spec, 8, small).status == "fail"
    assert check_shm(spec, 0, small).status == "warn"
    assert check_shm(spec, 8, facts()).status == "ok"


def _ib_port(state: str) -> dict[str, Any]:
    return {"name": "mlx5_0", "ports": [{"port": 1, "state": state, "link_layer": "InfiniBand"}]}


@pytest.mark.parametrize(
    ("host_facts", "status"),
    [
        pytest.param(facts(dev_infiniband=None, rdma=[_ib_port("ACTIVE")]), "fail", id="no-dev-infiniband"),
        pytest.param(facts(dev_infiniband=["uverbs0"], rdma=[_ib_port("DOWN")]), "fail", id="port-down"),
        pytest.param(facts(dev_infiniband=["uverbs0"], rdma=[_ib_port("ACTIVE")]), "ok", id="active"),
    ],
)
def test_rdma_on_an_infiniband_fabric(host_facts: HostFacts, status: str) -> None:
    spec = _fabric(stack_spec("local"), "infiniband")
    assert check_rdma(spec, ["mlx5_0"], host_facts).status == status


def test_the_listener_is_killed_only_while_its_pid_is_still_a_listener() -> None:
    assert listener_kill_command("x") is None
    assert listener_kill_command(0) is None
    listener = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)", "listen", "29500"])
    other = subprocess.Popen(["sleep", "300"])  # the pid reused by something else
    try:
        for proc in (listener, other):
            command = listener_kill_command(proc.pid)
            assert command is not None
            subprocess.run(["sh", "-c", command], check=False)
        assert listener.wait(timeout=10) == -signal.SIGTERM
        assert other.poll() is None
    finally:
        for proc in (listener, other):
            proc.kill()
            proc.wait()
