"""Does every host run the same environment? Each live container against its image's manifest.

hostscripts/envmanifest.py runs in every container as the login user (so a
``pip install --user`` shows) and answers with the manifest's digest, a digest
of the live python and dpkg sections, and every difference. Preflight reads the
full check (torch's own versions too); ``train`` the quick one, cheap enough
for every start.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpufleet.hostscripts import envmanifest
from gpufleet.launcher.remote import shell_command

CHECK_TIMEOUT_S = 120
SHOWN_DIFFERENCES = 8


@dataclass(frozen=True)
class Difference:
    section: str  # "python", "dpkg", "runtime"
    name: str
    expected: str  # envmanifest.MISSING when added
    live: str  # envmanifest.MISSING when removed

    def __str__(self) -> str:
        if self.expected == envmanifest.MISSING:
            return f"+{self.name} {self.live}"
        if self.live == envmanifest.MISSING:
            return f"-{self.name} {self.expected}"
        return f"{self.name} {self.expected} -> {self.live}"


@dataclass(frozen=True)
class HostEnvironment:
    host: str
    manifest_digest: str | None  # sha256 of the image's /etc/gpufleet/environment.json
    live_digest: str | None  # of what the container holds now (python and dpkg)
    differences: tuple[Difference, ...] = ()
    error: str | None = None  # no manifest, or no answer
    no_manifest: bool = False  # an image not built by gpufleet (or before it wrote manifests)

    @property
    def drifted(self) -> bool:
        return bool(self.differences)

    def drift_text(self) -> str:
        """``python: +six 1.17.0, torch 2.13.0 -> 2.12.0; dpkg: -curl 7.88.1-10``."""
        by_section: dict[str, list[str]] = {}
        for difference in self.differences:
            by_section.setdefault(difference.section, []).append(str(difference))
        parts = []
        for section, items in by_section.items():
            shown = items[:SHOWN_DIFFERENCES] + (
                [f"{len(items) - SHOWN_DIFFERENCES} more"] if len(items) > SHOWN_DIFFERENCES else []
            )
            parts.append(f"{section}: {', '.join(shown)}")
        return "; ".join(parts)


def check_command(python: str, quick: bool) -> str:
    source = Path(envmanifest.__file__).read_text()
    return shell_command(
        [python, "-c", source, "check", envmanifest.MANIFEST, *(["--quick"] if quick else [])]
    )


def parse_answer(host: str, stdout: str, stderr: str = "") -> HostEnvironment:
    """envmanifest.py's one JSON line, as a typed value (its absence is an error, never a pass)."""
    try:
        data: Any = json.loads(stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        data = None
    if not isinstance(data, dict):
        last = (stderr.strip().splitlines() or ["no output"])[-1]
        return HostEnvironment(host, None, None, error=f"the environment check gave no answer ({last})")
    if data.get("error"):
        missing = data.get("manifest_digest") is None and "no manifest" in str(data["error"])
        return HostEnvironment(host, None, None, error=str(data["error"]), no_manifest=missing)
    differences = tuple(
        Difference(str(d["section"]), str(d["name"]), str(d["expected"]), str(d["live"]))
        for d in data.get("differences") or []
    )
    return HostEnvironment(host, data.get("manifest_digest"), data.get("live_digest"), differences)


def read_environments(
    cluster: Any, quick: bool, names: list[str] | None = None
) -> dict[str, HostEnvironment]:
    """Every (named) host's answer, read in parallel; a host that fails to answer says so."""

    def read(name: str) -> HostEnvironment:
        result = cluster.hosts.run(name, check_command(cluster.python(name), quick), timeout=CHECK_TIMEOUT_S)
        return parse_answer(name, result.stdout, result.stderr)

    targets = names if names is not None else cluster.reachable
    found: dict[str, HostEnvironment] = cluster.hosts.each(read, targets).raise_first()
    return found


def expected_manifest(environments: dict[str, HostEnvironment], declared: str | None) -> str | None:
    """The manifest every host should run: the inventory's when it has one, else the most common."""
    if declared:
        return declared
    seen = [env.manifest_digest for env in environments.values() if env.manifest_digest]
    return max(sorted(set(seen)), key=seen.count) if seen else None


def host_problem(env: HostEnvironment, expected: str | None) -> str | None:
    """Why ``env``'s host does not run the team's environment (one clause), or None."""
    if env.error:
        return env.error
    if expected and env.manifest_digest != expected:
        return f"runs another image (manifest {_short(env.manifest_digest)}, expected {_short(expected)})"
    if env.drifted:
        return f"drifted from its image: {env.drift_text()}"
    return None


def unverifiable(environments: dict[str, HostEnvironment]) -> bool:
    """No host's image has a manifest (built elsewhere, or before gpufleet wrote them): nothing to compare."""
    return bool(environments) and all(env.no_manifest for env in environments.values())


def parity_problems(environments: dict[str, HostEnvironment], declared: str | None) -> dict[str, str]:
    """Host -> why it differs; empty when every host runs the same, unchanged environment (or when
    no host's image has a manifest: there is nothing to hold them to, and preflight warns)."""
    if unverifiable(environments) and not declared:
        return {}
    expected = expected_manifest(environments, declared)
    problems = {name: host_problem(env, expected) for name, env in environments.items()}
    return {name: problem for name, problem in problems.items() if problem}


def _short(digest: str | None) -> str:
    return digest.removeprefix("sha256:")[:12] if digest else "none"
