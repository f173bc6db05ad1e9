"""The resolver script's parsers, on recorded tool output (apt-get install -s, pip-compile, sources)."""

import pytest

from gpufleet.hostscripts import envlock

SIMULATION = """NOTE: This is only a simulation!
Reading package lists...
Inst libwrap0 (7.6.q-32 Debian:12.12/stable [amd64])
Inst openssh-server (1:9.2p1-2+deb12u7 Debian:12.12/stable, Debian-Security:12/stable-security [amd64])
Inst procps [2:4.0.2-2] (2:4.0.2-3 Debian:12.12/stable [amd64])
Inst ca-certificates (20230311+deb12u1 Debian:12.12/stable [all])
Inst libc6:i386 (2.36-9+deb12u13 Debian:12.12/stable [i386])
Conf libwrap0 (7.6.q-32 Debian:12.12/stable [amd64])
"""

COMPILED = """absl-py==2.3.1 \\
    --hash=sha256:bbbb \\
    --hash=sha256:aaaa
jupyterlab==4.5.0 \\
    --hash=sha256:cccc
Markdown_It_Py==4.0.0 \\
    --hash=sha256:dddd
"""


def test_the_simulation_gives_every_unpacked_package_at_its_version(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(envlock, "_native_arch", lambda: "amd64")
    assert envlock.parse_simulation(SIMULATION) == [
        {"name": "ca-certificates", "version": "20230311+deb12u1"},
        {"name": "libc6:i386", "version": "2.36-9+deb12u13"},
        {"name": "libwrap0", "version": "7.6.q-32"},
        {"name": "openssh-server", "version": "1:9.2p1-2+deb12u7"},
        {"name": "procps", "version": "2:4.0.2-3"},  # the upgrade's new version, not the base's
    ]


def test_compiled_requirements_keep_every_hash_sorted_under_canonical_names() -> None:
    assert envlock.parse_compiled(COMPILED) == [
        {"name": "absl-py", "version": "2.3.1", "hashes": ["sha256:aaaa", "sha256:bbbb"]},
        {"name": "jupyterlab", "version": "4.5.0", "hashes": ["sha256:cccc"]},
        {"name": "markdown-it-py", "version": "4.0.0", "hashes": ["sha256:dddd"]},
    ]


@pytest.mark.parametrize(
    ("uri", "archive"),
    [
        ("http://deb.debian.org/debian", "debian"),
        ("http://deb.debian.org/debian-security/", "debian-security"),
        ("http://archive.ubuntu.com/ubuntu/", "ubuntu"),
        ("http://security.ubuntu.com/ubuntu", "ubuntu"),
        ("https://developer.download.nvidia.com/compute/cuda/repos/ubuntu2204/x86_64/", None),
        ("http://mirror.internal/debian-mirror", None),
    ],
    ids=["debian", "debian-security", "ubuntu", "ubuntu-security", "cuda-vendor", "private-mirror"],
)
def test_archives_are_recognised_for_their_snapshot_service(uri: str, archive: str | None) -> None:
    assert envlock.archive_of(uri) == archive


def test_ubuntu_sources_move_to_the_snapshot_and_the_cuda_repository_stays_pinned_by_version() -> None:
    sources = envlock.parse_deb822_sources(
        "Types: deb\nURIs: http://archive.ubuntu.com/ubuntu/\nSuites: jammy jammy-updates\n"
        "Components: main universe\nSigned-By: /usr/share/keyrings/ubuntu-archive-keyring.gpg\n"
    ) + envlock.parse_one_line_sources(
        "deb [signed-by=/usr/share/keyrings/cuda.gpg] https://developer.download.nvidia.com/compute/cuda/repos/ubuntu2204/x86_64/ /\n"
    )
    lines, archive = envlock.snapshot_sources(sources, "20261204T000000Z")
    assert archive == "ubuntu"
    assert lines == [
        "deb [signed-by=/usr/share/keyrings/ubuntu-archive-keyring.gpg check-valid-until=no] "
        "https://snapshot.ubuntu.com/ubuntu/20261204T000000Z/ jammy main universe",
        "deb [signed-by=/usr/share/keyrings/ubuntu-archive-keyring.gpg check-valid-until=no] "
        "https://snapshot.ubuntu.com/ubuntu/20261204T000000Z/ jammy-updates main universe",
        "deb [signed-by=/usr/share/keyrings/cuda.gpg] "
        "https://developer.download.nvidia.com/compute/cuda/repos/ubuntu2204/x86_64/ /",
    ]


def test_debian_one_line_sources_move_to_snapshot_debian_org() -> None:
    sources = envlock.parse_one_line_sources(
        "deb http://deb.debian.org/debian bookworm main\n# deb http://old\n"
        "deb http://deb.debian.org/debian-security bookworm-security main\n"
    )
    lines, archive = envlock.snapshot_sources(sources, "20261204T000000Z")
    assert archive == "debian"
    assert lines == [
        "deb [check-valid-until=no] https://snapshot.debian.org/archive/debian/20261204T000000Z/ bookworm main",
        "deb [check-valid-until=no] https://snapshot.debian.org/archive/debian-security/20261204T000000Z/ "
        "bookworm-security main",
    ]


def test_a_missing_package_is_named_with_the_resolvers_reason() -> None:
    stderr = (
        "ERROR: Could not find a version that satisfies the requirement no-such-pkg-xyz (from versions: none)\n"
        "ERROR: No matching distribution found for no-such-pkg-xyz\n"
    )
    message = envlock.resolution_failure(stderr)
    assert message.startswith("no version of no-such-pkg-xyz on the index satisfies it")
    assert "\n" not in message


def test_an_unclosed_options_bracket_is_skipped_not_raised() -> None:
    assert envlock.parse_one_line_sources("deb [arch=amd64 http://x.example/debian bookworm main\n") == []
