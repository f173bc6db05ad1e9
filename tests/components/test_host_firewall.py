"""HostFirewall's scripts, run for real against nft in a namespace of our own."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator

import pytest

from components.host_firewall import apply_script, content_trigger, remove_script
from gpufleet.derive.firewall import firewall_plan
from gpufleet.render.renderer import render_nftables
from tests.conftest import needs_root, stack_spec


def test_sudo_prefixes_every_nft_call() -> None:
    for script in (apply_script(True), remove_script(True)):
        assert script.count("nft ") == script.count("sudo -n nft ")
    assert "sudo" not in apply_script(False) + remove_script(False)


def test_apply_checks_before_it_applies() -> None:
    script = apply_script(False)
    assert script.index('nft -c -f "$f"') < script.index('nft -f "$f"')
    assert script.startswith("set -eu;")


def test_remove_touches_only_the_gpufleet_table() -> None:
    script = remove_script(False)
    assert "delete table inet gpufleet" in script
    assert "flush" not in script


def test_trigger_follows_the_content() -> None:
    assert content_trigger("a") == content_trigger("a") != content_trigger("b")


@pytest.fixture
def netns() -> Iterator[str]:
    name = f"gf-fw-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def _sh(ns: str, script: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ip", "netns", "exec", ns, "sh", "-c", script],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=30,
    )


def _tables(ns: str) -> str:
    return _sh(ns, "nft list tables").stdout


@needs_root("nft", "ip")
@pytest.mark.timeout(60)
def test_apply_replace_and_remove_for_real(netns: str) -> None:
    spec = stack_spec("example-ib")
    conf = render_nftables(spec, spec.hosts[0], firewall_plan(spec))
    assert _sh(netns, "nft add table inet other").returncode == 0

    for _ in range(2):  # applying twice replaces, never duplicates
        done = _sh(netns, apply_script(False), conf)
        assert done.returncode == 0, done.stderr
    listed = _sh(netns, "nft list table inet gpufleet").stdout
    assert "policy drop" in listed and "10.20.0.0/24" in listed
    assert listed.count("chain input") == 1

    broken = _sh(netns, apply_script(False), conf.replace("policy drop", "policy maybe"))
    assert broken.returncode != 0
    assert "policy drop" in _sh(netns, "nft list table inet gpufleet").stdout, (
        "a bad file must change nothing"
    )

    for _ in range(2):  # removing is idempotent
        done = _sh(netns, remove_script(False))
        assert done.returncode == 0, done.stderr
    assert "inet gpufleet" not in _tables(netns)
    assert "inet other" in _tables(netns)
