"""torchrun argv/env per host: rendezvous on hosts[0], one rdzv id per run, the host's NCCL/gloo env."""

from __future__ import annotations

from typing import Any

import pytest

from gpufleet.derive.torchrun import RunSettings, rdzv_endpoint, run_tag, torchrun_command
from gpufleet.spec import ClusterSpec
from tests.conftest import stack_spec

RUN = RunSettings(
    run_id="train-1", script="train.py", script_args=("--epochs", "3"), run_dir="/ck/runs/train-1"
)


def _flags(argv: tuple[str, ...]) -> dict[str, str]:
    return dict(arg[2:].split("=", 1) for arg in argv if arg.startswith("--") and "=" in arg)


@pytest.mark.parametrize(
    ("host_index", "is_host"),
    [pytest.param(0, "true", id="host-0-serves-the-store"), pytest.param(1, "false", id="host-1-joins")],
)
def test_rendezvous_on_host_zero(host_index: int, is_host: str) -> None:
    spec = stack_spec("local")
    command = torchrun_command(spec, spec.hosts[host_index], RUN, python="/venv/bin/python")
    flags = _flags(command.argv)
    assert flags["rdzv-endpoint"] == f"{spec.hosts[0].address}:{spec.network.rdzv_port}"
    assert flags["rdzv-backend"] == "c10d"
    assert flags["rdzv-id"] == "train-1"
    assert f"is_host={is_host}" in flags["rdzv-conf"]
    assert "join_timeout=" in flags["rdzv-conf"] and "read_timeout=" in flags["rdzv-conf"]
    assert flags["nnodes"] == str(len(spec.hosts))


def test_argv_runs_the_hosts_python_then_the_script_and_its_args() -> None:
    spec = stack_spec("local")
    argv = torchrun_command(spec, spec.hosts[1], RUN, python="/venv/bin/python").argv
    assert argv[:3] == ("/venv/bin/python", "-m", "torch.distributed.run")
    assert argv[-3:] == ("train.py", "--epochs", "3")
    assert _flags(argv)["log-dir"] == "/ck/runs/train-1/torchrun/node-1"


@pytest.mark.parametrize(
    ("nproc_spec", "override", "expected"),
    [
        pytest.param(2, None, "2", id="from-spec"),
        pytest.param("auto", None, "1", id="auto-cpu-host-is-1"),
        pytest.param(2, 3, "3", id="cli-override-wins"),
    ],
)
def test_nproc_per_node(nproc_spec: Any, override: int | None, expected: str) -> None:
    spec = stack_spec("local")
    spec = spec.model_copy(
        update={"training": spec.training.model_copy(update={"nproc_per_node": nproc_spec})}
    )
    run = RunSettings(run_id="r", script="t.py", nproc_per_node=override)
    assert _flags(torchrun_command(spec, spec.hosts[0], run, "python3").argv)["nproc-per-node"] == expected


def test_max_restarts_comes_from_the_spec() -> None:
    spec = stack_spec("local")
    spec = spec.model_copy(update={"training": spec.training.model_copy(update={"max_restarts": 4})})
    assert _flags(torchrun_command(spec, spec.hosts[0], RUN, "python3").argv)["max-restarts"] == "4"


def test_env_has_the_hosts_nccl_and_gloo_interface_and_the_run_tag() -> None:
    spec = stack_spec("local")
    host = spec.hosts[1]
    env = torchrun_command(spec, host, RUN, "python3").env
    assert env["GLOO_SOCKET_IFNAME"] == host.ifname
    assert env["NCCL_SOCKET_IFNAME"] == f"={host.ifname}"
    assert env["NCCL_IB_DISABLE"] == "1"  # the local stack is ethernet
    assert env["GPUFLEET_RUN_TAG"] == run_tag(spec.name, "train-1", host) == f"{spec.name}/train-1@node-1"
    assert env["GPUFLEET_RUN_DIR"] == RUN.run_dir
    assert env["TORCHELASTIC_LOG_LINE_PREFIX_TEMPLATE"] == "[rank${rank}]:"


def test_the_run_tag_tells_clusters_apart() -> None:
    # Two local clusters share the login uid: stop X on one must not match X on the other.
    spec = stack_spec("local")
    host = spec.hosts[0]
    assert run_tag("one", "train-1", host) != run_tag("two", "train-1", host)


def test_ipv6_endpoint_is_bracketed() -> None:
    spec = stack_spec("local")
    raw = spec.model_dump()
    raw["network"]["cluster_cidr"] = "fd00::/64"
    raw["ssh"]["admin_cidrs"] = ["fd00::1/128"]
    for index, host in enumerate(raw["hosts"]):
        host["address"] = f"fd00::{11 + index}"
    v6 = ClusterSpec.model_validate(raw)
    assert rdzv_endpoint(v6) == f"[fd00::11]:{v6.network.rdzv_port}"


def test_the_inventorys_nccl_env_replaces_the_spec_only_derivation() -> None:
    spec = stack_spec("local")
    probed = {"NCCL_SOCKET_IFNAME": "=ens1f0", "NCCL_IB_HCA": "=mlx5_0:1", "GLOO_SOCKET_IFNAME": "ens1f0"}
    env = torchrun_command(spec, spec.hosts[0], RUN, "python3", nccl=probed).env
    assert {k: env[k] for k in probed} == probed
    assert "NCCL_IB_DISABLE" not in env
    assert env["GPUFLEET_RUN"] == "train-1"


def _with_training(spec: ClusterSpec, **training: Any) -> ClusterSpec:
    data = spec.model_dump()
    data["training"].update(training)
    return ClusterSpec.model_validate(data)


def _three_hosts(spec: ClusterSpec) -> dict[str, Any]:
    data = spec.model_dump()
    third = dict(
        data["hosts"][1], name="node-2", address=data["hosts"][1]["address"].rsplit(".", 1)[0] + ".99"
    )
    data["hosts"].append(third)
    return data


def test_an_elastic_job_runs_with_nnodes_min_max() -> None:
    data = _three_hosts(stack_spec("local"))
    data["training"].update(min_hosts=2, max_restarts=3)
    spec = ClusterSpec.model_validate(data)
    flags = _flags(torchrun_command(spec, spec.hosts[0], RUN, python="/venv/bin/python").argv)
    assert flags["nnodes"] == "2:3"
    assert flags["max-restarts"] == "3"
    assert "last_call_timeout=" in flags["rdzv-conf"] and "keep_alive_interval=" in flags["rdzv-conf"]


def test_min_hosts_defaults_to_every_host() -> None:
    spec = _with_training(stack_spec("local"), min_hosts=None)
    assert _flags(torchrun_command(spec, spec.hosts[0], RUN, python="p").argv)["nnodes"] == "2"
    spec = _with_training(stack_spec("local"), min_hosts=2)
    assert _flags(torchrun_command(spec, spec.hosts[0], RUN, python="p").argv)["nnodes"] == "2"


def test_every_restart_gets_a_fresh_worker_store() -> None:
    # The shared rendezvous store keeps the last attempt's keys: restarted ranks read dead addresses.
    spec = stack_spec("local")
    env = torchrun_command(spec, spec.hosts[1], RUN, python="p").env
    assert env["TORCH_DISABLE_SHARE_RDZV_TCP_STORE"] == "1"


@pytest.mark.parametrize(
    ("training", "needle"),
    [
        pytest.param({"min_hosts": 3}, "is 3, but the cluster has 2 hosts", id="more-than-hosts"),
        pytest.param(
            {"min_hosts": 1, "max_restarts": 0}, "needs training.max_restarts >= 1", id="no-restarts"
        ),
        pytest.param({"min_hosts": 0}, "min_hosts", id="zero"),
        pytest.param({"host_timeout_s": 1}, "host_timeout_s", id="timeout-too-short"),
    ],
)
def test_bad_training_host_settings_are_refused(training: dict[str, Any], needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        _with_training(stack_spec("local"), **training)
