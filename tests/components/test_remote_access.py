"""How the runner reaches a host: target parsing, and ssh options that really pin the host key."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from components.remote_access import SshTarget, docker_ssh_opts, ssh_target
from gpufleet.spec import parse_spec
from gpufleet.spec.pulumi_requirements import missing_pulumi_fields
from tests.conftest import needs_root, stack_spec

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIP5snpav6gGqq+LgOuSLcnsEHFTN5efZ+B/iUNN3KohY"


def _spec(**host: Any) -> Any:
    base = stack_spec("example-ethernet").model_dump()
    base["hosts"] = [{**base["hosts"][0], **host}]
    return parse_spec(base)


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        pytest.param({}, SshTarget("trainer", "10.0.0.10", 22, KEY), id="default"),
        pytest.param(
            {"ssh_address": "192.168.1.5"}, SshTarget("trainer", "192.168.1.5", 22, KEY), id="ssh-address"
        ),
        pytest.param({"docker_ssh": "ops@10.9.9.9"}, SshTarget("ops", "10.9.9.9", 22, KEY), id="docker-ssh"),
        pytest.param(
            {"docker_ssh": "ops@gpu.example.com:2200"},
            SshTarget("ops", "gpu.example.com", 2200, KEY),
            id="port",
        ),
        pytest.param({"docker_ssh": "ops@[fd00::5]:2200"}, SshTarget("ops", "fd00::5", 2200, KEY), id="ipv6"),
    ],
)
def test_ssh_target(host: dict[str, Any], expected: SshTarget) -> None:
    spec = _spec(host_key=KEY, **host)
    assert ssh_target(spec, spec.hosts[0]) == expected


def test_docker_url_brackets_ipv6() -> None:
    assert SshTarget("ops", "fd00::5", 2200, KEY).docker_url == "ssh://ops@[fd00::5]:2200"
    assert SshTarget("ops", "10.0.0.1", 22, KEY).docker_url == "ssh://ops@10.0.0.1:22"


def test_sudo_only_when_not_root() -> None:
    assert SshTarget("ops", "h", 22, KEY).needs_sudo
    assert not SshTarget("root", "h", 22, KEY).needs_sudo


def test_missing_host_key_is_reported_per_host() -> None:
    spec = _spec(host_key=None)
    issues = missing_pulumi_fields(spec)
    assert [i.path for i in issues] == ["hosts[0].host_key"]
    with pytest.raises(ValueError, match="host_key"):
        ssh_target(spec, spec.hosts[0])


def test_ssh_opts_pin_and_never_trust_on_first_use() -> None:
    opts = docker_ssh_opts(SshTarget("ops", "h", 22, KEY), "~/.ssh/runner")
    assert opts[:2] == ["-i", "~/.ssh/runner"]
    pairs = dict(o.split("=", 1) for o in opts[3::2])
    assert pairs["StrictHostKeyChecking"] == "yes"
    assert pairs["UserKnownHostsFile"] == pairs["GlobalKnownHostsFile"] == "/dev/null"
    assert pairs["KnownHostsCommand"] == f"/bin/echo %H {KEY}"
    assert pairs["HostKeyAlgorithms"] == "ssh-ed25519"
    assert all(opts[i] == "-o" for i in range(2, len(opts), 2))


# --- the options against a real sshd, in a namespace of our own ----------------------------


def _keygen(path: Path, kind: str = "ed25519") -> str:
    size = ["-b", "3072"] if kind == "rsa" else []
    subprocess.run(["ssh-keygen", "-q", "-t", kind, *size, "-N", "", "-C", "", "-f", str(path)], check=True)
    return " ".join(path.with_name(path.name + ".pub").read_text().split()[:2])


@pytest.fixture(params=["ed25519", "rsa"])
def sshd(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[tuple[str, str, Path]]:
    """(netns, host public key, a client key) for an sshd on 127.0.0.1:2222 in a fresh netns.

    Both key types a spec accepts as host_key: an RSA pin must not ask for the SHA-1
    "ssh-rsa" signature, which OpenSSH >= 8.8 no longer offers."""
    ns = f"gf-pin-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    server = None
    try:
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        host_public = _keygen(tmp_path / "host_key", request.param)
        _keygen(tmp_path / "client_key")
        config = tmp_path / "sshd_config"
        config.write_text(
            f"Port 2222\nListenAddress 127.0.0.1\nHostKey {tmp_path / 'host_key'}\nPidFile none\n"
            "UsePAM no\nAuthenticationMethods publickey\nAuthorizedKeysFile none\n"
        )
        server = subprocess.Popen(
            ["ip", "netns", "exec", ns, "/usr/sbin/sshd", "-D", "-e", "-f", str(config)],
            stderr=subprocess.DEVNULL,
        )
        for _ in range(50):
            probe = subprocess.run(
                ["ip", "netns", "exec", ns, "bash", "-c", "</dev/tcp/127.0.0.1/2222"], capture_output=True
            )
            if probe.returncode == 0:
                break
            time.sleep(0.1)
        yield ns, host_public, tmp_path / "client_key"
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=10)
        subprocess.run(["ip", "netns", "del", ns], check=False)


def _ssh(ns: str, host_key: str, identity: Path) -> subprocess.CompletedProcess[str]:
    opts = docker_ssh_opts(SshTarget("nobody", "127.0.0.1", 2222, host_key), str(identity))
    return subprocess.run(
        [
            "ip",
            "netns",
            "exec",
            ns,
            "ssh",
            "-F",
            "/dev/null",
            "-p",
            "2222",
            *opts,
            "nobody@127.0.0.1",
            "true",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )


@needs_root("sshd", "ssh", "ssh-keygen", "ip")
@pytest.mark.timeout(60)
def test_real_ssh_accepts_the_pinned_key_and_refuses_any_other(
    sshd: tuple[str, str, Path], tmp_path: Path
) -> None:
    ns, host_public, client = sshd
    other = _keygen(tmp_path / "other_host_key", host_public.split()[0].removeprefix("ssh-"))
    right = _ssh(ns, host_public, client)
    # The host key check passes; the (unauthorized) client key is then refused.
    assert "Host key verification failed" not in right.stderr, right.stderr
    assert "Permission denied (publickey)" in right.stderr, right.stderr
    wrong = _ssh(ns, other, client)  # a key of the same type, not the host's
    assert wrong.returncode != 0
    assert "Host key verification failed" in wrong.stderr, wrong.stderr
