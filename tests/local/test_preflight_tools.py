"""Checks before `up`: provisioner, root, tools, addresses, the interpreter's path."""

from __future__ import annotations

import json
import os
import stat
from typing import Any

import pytest

from gpufleet.errors import GpufleetError
from gpufleet.local.names import controller_address
from gpufleet.local.preflight_tools import (
    address_collisions,
    check_provisioner,
    check_root,
    check_tools,
    untraversable,
)
from tests.conftest import stack_spec


def _interfaces(*entries: tuple[str, str, int]) -> str:
    return json.dumps(
        [
            {"ifname": name, "addr_info": [{"local": local, "prefixlen": prefix}]}
            for name, local, prefix in entries
        ]
    )


@pytest.mark.parametrize(
    ("command", "advice"),
    [pytest.param("up", "pulumi up", id="up"), pytest.param("down", "pulumi destroy", id="down")],
)
def test_pulumi_stacks_are_sent_to_pulumi(command: str, advice: str) -> None:
    with pytest.raises(GpufleetError, match=rf"provisioner 'pulumi': gpufleet {command} only.*{advice}"):
        check_provisioner(stack_spec("example-ib"), command)
    check_provisioner(stack_spec("local"), command)


def test_not_root_is_a_clear_error() -> None:
    with pytest.raises(GpufleetError, match="needs root"):
        check_root(euid=1000)
    check_root(euid=0)


@pytest.mark.parametrize(
    ("absent", "package"),
    [
        pytest.param({"sshd"}, "openssh-server", id="sshd"),
        pytest.param({"nft"}, "nftables", id="nft"),
        pytest.param({"ip"}, "iproute2", id="ip"),
        pytest.param({"unshare"}, "util-linux", id="unshare"),
    ],
)
def test_missing_tools_name_the_package(absent: set[str], package: str) -> None:
    def which(tool: str) -> str | None:
        return None if tool in absent else f"/usr/bin/{tool}"

    with pytest.raises(
        GpufleetError, match=rf"missing tools .*{next(iter(absent))}.*apt-get install -y {package}"
    ):
        check_tools(which)


def test_all_tools_present_passes() -> None:
    check_tools(lambda tool: f"/usr/bin/{tool}")


@pytest.mark.parametrize(
    ("interfaces", "expected"),
    [
        pytest.param(_interfaces(("lo", "127.0.0.1", 8), ("eth0", "192.0.2.2", 24)), [], id="unrelated"),
        pytest.param(
            _interfaces(("eth1", "10.77.0.12", 32)), ["10.77.0.12 (host 'node-1')"], id="host-address"
        ),
        pytest.param(_interfaces(("eth1", "10.77.0.1", 32)), ["10.77.0.1 (the controller)"], id="controller"),
        pytest.param(
            _interfaces(("br9", "10.77.0.200", 24)), ["overlaps 10.77.0.0/24 of interface br9"], id="overlap"
        ),
        pytest.param(_interfaces(("eth0", "fd00::2", 64)), [], id="other-family"),
    ],
)
def test_address_collisions(interfaces: str, expected: list[str]) -> None:
    spec = stack_spec("local")
    problems = address_collisions(spec, controller_address(spec), interfaces)
    assert len(problems) == len(expected)
    for problem, fragment in zip(problems, expected, strict=True):
        assert fragment in problem


def _fake_stat(modes: dict[str, int]) -> Any:
    def stat_fn(path: str) -> os.stat_result:
        mode = modes.get(path, stat.S_IFDIR | 0o755)
        return os.stat_result((mode, 0, 0, 0, 0, 0, 0, 0, 0, 0))

    return stat_fn


@pytest.mark.parametrize(
    ("modes", "expected"),
    [
        pytest.param({}, None, id="all-traversable"),
        pytest.param({"/root": stat.S_IFDIR | 0o700}, "/root", id="private-home"),
        pytest.param(
            {"/root/venv/bin/python": stat.S_IFREG | 0o750}, "/root/venv/bin/python", id="file-not-o+x"
        ),
    ],
)
def test_untraversable(modes: dict[str, int], expected: str | None) -> None:
    assert untraversable("/root/venv/bin/python", _fake_stat(modes)) == expected
