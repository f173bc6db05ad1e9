"""The rendered nftables.conf, enforced for real: who reaches which port of a local host. Root only.

An "intruder" namespace joins the cluster's LAN with an address inside
cluster_cidr that is neither a host nor in admin_cidrs.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from gpufleet.inventory import Inventory
from gpufleet.local.names import host_namespace
from gpufleet.spec import ClusterSpec
from tests.conftest import needs_root
from tests.local.cluster import lan_stranger, local_cluster

pytestmark = [needs_root("ip", "sshd", "nft", "unshare"), pytest.mark.slow, pytest.mark.timeout(120)]

CLUSTER = "lt-fw"
OCTET = 229
INTRUDER_ADDRESS = f"10.{OCTET}.0.99"
OTHER_PORT = 31337  # any port: peers reach every port
CLOSED_PORT = 31338
TIMEOUT = 0.5  # a LAN answers in well under a millisecond: no answer within this means dropped

CONNECT = """
import socket, sys
address, port, timeout = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
try:
    socket.create_connection((address, port), timeout=timeout).close()
    print("open")
except socket.timeout:
    print("filtered")
except ConnectionRefusedError:
    print("closed")
"""

LISTEN = """
import socket, sys, time
sockets = []
for port in sys.argv[1:]:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", int(port)))
    s.listen(16)
    sockets.append(s)
print("listening", flush=True)
time.sleep(600)
"""


def _in_ns(namespace: str | None, argv: list[str]) -> list[str]:
    return (["ip", "netns", "exec", namespace] if namespace else []) + argv


def probe(namespace: str | None, address: str, port: int) -> str:
    """'open', 'closed' (refused: the packet got in) or 'filtered' (dropped: no answer)."""
    argv = _in_ns(namespace, [sys.executable, "-c", CONNECT, address, str(port), str(TIMEOUT)])
    return subprocess.run(argv, capture_output=True, text=True, check=True, timeout=30).stdout.strip()


def listen(namespace: str, ports: list[int]) -> subprocess.Popen[str]:
    argv = _in_ns(namespace, [sys.executable, "-c", LISTEN, *map(str, ports)])
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "listening"
    return process


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ClusterSpec, Inventory]]:
    with local_cluster(tmp_path_factory.mktemp("fw"), CLUSTER, OCTET, hosts=2, nas=False) as (
        spec,
        inventory,
        _,
    ):
        yield spec, inventory


@pytest.fixture(scope="module")
def intruder(cluster: tuple[ClusterSpec, Inventory]) -> Iterator[str]:
    with lan_stranger(CLUSTER, INTRUDER_ADDRESS, 24, "gftintr229") as name:
        yield name


@pytest.fixture(scope="module")
def listeners(cluster: tuple[ClusterSpec, Inventory]) -> Iterator[None]:
    spec, _ = cluster
    process = listen(host_namespace(CLUSTER, "node-0"), [spec.network.rdzv_port, OTHER_PORT])
    try:
        yield
    finally:
        process.kill()
        process.wait()


def test_intruder_reaches_the_lan(cluster: tuple[ClusterSpec, Inventory], intruder: str) -> None:
    # Control: node-0 may connect OUT to the intruder, so the LAN itself works.
    process = listen(intruder, [OTHER_PORT])
    try:
        started = time.monotonic()
        while probe(host_namespace(CLUSTER, "node-0"), INTRUDER_ADDRESS, OTHER_PORT) != "open":
            assert time.monotonic() - started < 5
    finally:
        process.kill()
        process.wait()


@pytest.mark.usefixtures("listeners")
def test_ssh_and_rendezvous_are_filtered_for_a_stranger_on_the_lan(
    cluster: tuple[ClusterSpec, Inventory], intruder: str
) -> None:
    spec, inventory = cluster
    node0 = inventory.hosts[0].address
    assert probe(intruder, node0, spec.ssh.port) == "filtered"
    assert probe(intruder, node0, spec.network.rdzv_port) == "filtered"
    assert probe(intruder, node0, OTHER_PORT) == "filtered"


@pytest.mark.usefixtures("listeners")
def test_controller_reaches_ssh_only(cluster: tuple[ClusterSpec, Inventory]) -> None:
    spec, inventory = cluster
    node0 = inventory.hosts[0].address
    assert probe(None, node0, spec.ssh.port) == "open"
    assert probe(None, node0, spec.network.rdzv_port) == "filtered"


@pytest.mark.usefixtures("listeners")
def test_hosts_reach_each_other_on_any_port(cluster: tuple[ClusterSpec, Inventory]) -> None:
    spec, inventory = cluster
    node0 = inventory.hosts[0].address
    node1 = host_namespace(CLUSTER, "node-1")
    assert probe(node1, node0, spec.network.rdzv_port) == "open"
    assert probe(node1, node0, OTHER_PORT) == "open"
    assert probe(node1, node0, spec.ssh.port) == "open"
    assert probe(node1, node0, CLOSED_PORT) == "closed"  # not dropped: the packet got in
