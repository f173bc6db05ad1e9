"""Namespace names can collide across clusters; the owner marker keeps `up`/`down` to their own. Root only."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpufleet.errors import GpufleetError
from gpufleet.inventory import state_dir
from gpufleet.local import cluster_down, cluster_is_up, cluster_up, netns
from gpufleet.local.names import host_namespace, lan_namespace
from gpufleet.spec import ClusterSpec, load_spec
from tests.conftest import needs_root
from tests.local.cluster import cluster_config, write_stack

pytestmark = [needs_root("ip", "sshd", "nft", "unshare"), pytest.mark.slow, pytest.mark.timeout(120)]

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAICz5ewroQEj/vw7OrTFRV8xC+4Ut/lU8JEiutJcRUi6V test"


def _spec(folder: Path, name: str, octet: int, hosts: list[str]) -> ClusterSpec:
    folder.mkdir(exist_ok=True)
    config = cluster_config(name, octet, len(hosts), 1, False, KEY)
    for host, new in zip(config["hosts"], hosts, strict=True):
        host["name"] = new
    return load_spec(write_stack(folder, config))


def test_down_of_a_colliding_cluster_leaves_the_other_intact(tmp_path: Path) -> None:
    # 'lt-own'/'node-0' and 'lt-own-node'/'0' share a namespace name, and so do
    # 'lt-own'/'node-lan' and the LAN of 'lt-own-node'.
    mine = _spec(tmp_path / "a", "lt-own", 236, ["node-0", "node-lan"])
    other = _spec(tmp_path / "b", "lt-own-node", 237, ["0", "1"])
    assert host_namespace("lt-own", "node-0") == host_namespace("lt-own-node", "0")
    assert host_namespace("lt-own", "node-lan") == lan_namespace("lt-own-node")
    cluster_up(mine, tmp_path / "a")
    try:
        with pytest.raises(
            GpufleetError, match=r"gpufleet-lt-own-node-\S+ it needs belongs to cluster 'lt-own'"
        ):
            cluster_up(other, tmp_path / "b")
        assert not state_dir(tmp_path / "b", other.name).exists()
        cluster_down(other, tmp_path / "b")  # no record: the spec's names include the other cluster's
        assert cluster_is_up(mine, tmp_path / "a"), "down of one cluster broke another"
        assert netns.namespace_exists(host_namespace("lt-own", "node-0"))
        assert netns.namespace_exists(host_namespace("lt-own", "node-lan"))
    finally:
        cluster_down(mine, tmp_path / "a")
    assert not any(ns.startswith("gpufleet-lt-own-") for ns in netns.gpufleet_namespaces())
