"""`up` and `down` for real: namespaces, sshd, nftables, rollback. Root only."""

from __future__ import annotations

import json
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from gpufleet.errors import GpufleetError
from gpufleet.inventory import state_dir
from gpufleet.local import build, cluster_down, cluster_is_up, cluster_up, hostproc, netns
from gpufleet.local.names import controller_link, host_namespace
from gpufleet.local.record import RECORD_FILE
from gpufleet.spec import load_spec, parse_spec
from tests.conftest import needs_root
from tests.local.cluster import cluster_config, local_cluster, write_stack

pytestmark = [needs_root("ip", "sshd", "nft", "unshare"), pytest.mark.slow, pytest.mark.timeout(120)]

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAICz5ewroQEj/vw7OrTFRV8xC+4Ut/lU8JEiutJcRUi6V test"


def _namespaces(cluster: str) -> list[str]:
    return sorted(p.name for p in netns.NETNS_DIR.glob(f"gpufleet-{cluster}-*"))


def _nft_tables(namespace: str) -> str:
    return subprocess.run(
        ["ip", "netns", "exec", namespace, "nft", "list", "tables"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def test_up_then_down_leaves_nothing_behind(tmp_path: Path) -> None:
    with local_cluster(tmp_path, "lt-updown", 221, hosts=2) as (spec, inventory, _):
        namespaces = _namespaces(spec.name)
        assert namespaces == [
            "gpufleet-lt-updown-lan",
            "gpufleet-lt-updown-node-0",
            "gpufleet-lt-updown-node-1",
        ]
        inodes = {netns.namespace_inode(ns) for ns in namespaces}
        assert None not in inodes
        processes = netns.pids_in_namespaces({i for i in inodes if i is not None})
        assert len(processes) >= 2  # one sshd per host at least
        assert "table inet gpufleet" in _nft_tables("gpufleet-lt-updown-node-0")
        assert netns.link_exists(controller_link(spec.name))
        assert [h.name for h in inventory.hosts] == ["node-0", "node-1"]
        assert inventory.provisioner == "local"
        assert inventory.nccl_env["node-1"]["GLOO_SOCKET_IFNAME"] == "eth0"  # the host's ifname
        assert cluster_is_up(spec, tmp_path)
    assert _namespaces(spec.name) == []
    assert netns.pids_in_namespaces({i for i in inodes if i is not None}) == []
    assert not [pid for pid in processes if Path(f"/proc/{pid}").exists() and _is_ours(pid, inodes)]
    assert not netns.link_exists(controller_link(spec.name))
    assert not state_dir(tmp_path, spec.name).exists()
    assert not cluster_is_up(spec, tmp_path)


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _is_ours(pid: int, inodes: set[int | None]) -> bool:
    try:
        return Path(f"/proc/{pid}/ns/net").readlink().name in {f"net:[{i}]" for i in inodes}
    except OSError:
        return False


def test_up_twice_changes_nothing(tmp_path: Path) -> None:
    with local_cluster(tmp_path, "lt-twice", 222, hosts=2) as (spec, inventory, _):
        folder = state_dir(tmp_path, spec.name)
        files = {
            name: (folder / name).read_bytes() for name in ("inventory.json", "known_hosts", RECORD_FILE)
        }
        again = cluster_up(spec, tmp_path)
        assert again == inventory
        assert {name: (folder / name).read_bytes() for name in files} == files
        pids = json.loads(files[RECORD_FILE])["pids"]
        assert sorted(pids) == ["node-0", "node-1"]
        assert all(Path(f"/proc/{pid}").exists() for pid in pids.values())


def test_down_on_a_cluster_that_is_not_up_is_fine(tmp_path: Path) -> None:
    spec = parse_spec(cluster_config("lt-never", 223, 2, 1, False, KEY))
    cluster_down(spec, tmp_path)
    cluster_down(spec, tmp_path)
    assert not state_dir(tmp_path, spec.name).exists()


def test_a_failure_midway_rolls_everything_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = load_spec(write_stack(tmp_path, cluster_config("lt-rollback", 225, 2, 1, True, KEY)))
    seen: dict[str, object] = {}

    def fail(*args: object, **kwargs: object) -> None:
        seen["namespaces"] = _namespaces(spec.name)
        seen["state"] = state_dir(tmp_path, spec.name).exists()
        seen["started"] = list(hostproc._started)
        raise GpufleetError("injected failure after the hosts started")

    monkeypatch.setattr(build.logins, "verify_all", fail)
    with pytest.raises(GpufleetError, match="injected failure"):
        cluster_up(spec, tmp_path)
    assert len(seen["namespaces"]) == 3 and seen["state"]  # type: ignore[arg-type]
    assert seen["started"], "the hosts' processes were started before the failure"
    survivors = [pid for pid in seen["started"] if _running(pid)]  # type: ignore[attr-defined]
    assert survivors == [], "a rolled-back host process outlived its cluster"
    assert _namespaces(spec.name) == []
    assert not netns.link_exists(controller_link(spec.name))
    assert not state_dir(tmp_path, spec.name).exists()


def test_a_colliding_address_is_refused_before_anything_is_built(tmp_path: Path) -> None:
    spec = load_spec(write_stack(tmp_path, cluster_config("lt-collide", 226, 2, 1, False, KEY)))
    dummy = "gft-collide226"
    subprocess.run(["ip", "link", "add", dummy, "type", "veth", "peer", "name", dummy + "p"], check=True)
    try:
        subprocess.run(["ip", "addr", "add", "10.226.0.12/32", "dev", dummy], check=True)
        with pytest.raises(
            GpufleetError, match=r"10\.226\.0\.12 \(host 'node-1'\) is already the address of"
        ):
            cluster_up(spec, tmp_path)
    finally:
        subprocess.run(["ip", "link", "del", dummy], check=True)
    assert _namespaces(spec.name) == []
    assert not state_dir(tmp_path, spec.name).exists()


def test_up_refuses_a_changed_spec_and_a_half_dead_cluster(tmp_path: Path) -> None:
    with local_cluster(tmp_path, "lt-refuse", 227, hosts=2, nas=False) as (spec, _, stack):
        grown = cluster_config("lt-refuse", 227, 3, 2, False, spec.ssh.authorized_keys[0])
        with pytest.raises(GpufleetError, match="up with a different spec: run gpufleet down"):
            cluster_up(parse_spec(grown), tmp_path)
        record = json.loads((state_dir(tmp_path, spec.name) / RECORD_FILE).read_text())
        pid = record["pids"]["node-1"]
        hostproc.kill_group(pid, netns.namespace_inode(host_namespace(spec.name, "node-1")))
        hostproc.reap_wait([pid])
        assert not cluster_is_up(spec, tmp_path)
        with pytest.raises(GpufleetError, match="only partly up"):
            cluster_up(load_spec(stack), tmp_path)
    assert _namespaces(spec.name) == []


def test_a_host_that_fails_to_start_is_reported_with_its_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = load_spec(write_stack(tmp_path, cluster_config("lt-nostart", 232, 2, 1, False, KEY)))
    monkeypatch.setattr(build.hostproc, "start_script", lambda *args: "echo sshd-cannot-start >&2; exit 3\n")
    with pytest.raises(GpufleetError, match=r"(?s)exited before accepting connections.*sshd-cannot-start"):
        cluster_up(spec, tmp_path, login_timeout=5)
    assert _namespaces(spec.name) == []
    assert not state_dir(tmp_path, spec.name).exists()


def test_two_ups_at_once_build_one_cluster(tmp_path: Path) -> None:
    spec = load_spec(write_stack(tmp_path, cluster_config("lt-race", 234, 2, 1, False, KEY)))
    try:
        with ThreadPoolExecutor(max_workers=2) as pool:
            first, second = (f.result() for f in [pool.submit(cluster_up, spec, tmp_path) for _ in range(2)])
        assert first == second
        assert cluster_is_up(spec, tmp_path)
    finally:
        cluster_down(spec, tmp_path)
    assert _namespaces(spec.name) == []


def test_down_removes_the_mount_points_up_created(tmp_path: Path) -> None:
    """A NAS mount that did not exist on the machine is created by up and removed by down."""
    top = Path(f"/gpufleet-test-{tmp_path.name}")
    config = cluster_config("lt-mounts", 235, hosts=1, nproc=1, nas=True, user_key=KEY)
    config["nas"][1]["mount"] = str(top / "checkpoints")
    spec = load_spec(write_stack(tmp_path, config))
    assert not top.exists()
    try:
        cluster_up(spec, tmp_path)
        assert (top / "checkpoints").is_dir()
        others = [ns for ns in netns.gpufleet_namespaces() if not ns.startswith("gpufleet-lt-mounts-")]
    finally:
        cluster_down(spec, tmp_path)
    others_after = [ns for ns in netns.gpufleet_namespaces() if not ns.startswith("gpufleet-lt-mounts-")]
    kept = top.exists()
    if kept:
        hostproc.remove_created_dirs([str(top), str(top / "checkpoints")], other_clusters=False)
    if bool(others) != bool(others_after):
        pytest.skip("another gpufleet cluster came or went during the test (parallel runs)")
    # With another cluster up the folder may be its mount point: then it must stay.
    assert kept == bool(others)
