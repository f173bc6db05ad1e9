"""What the Pulumi program needs beyond a valid spec: the one list.

``pulumi up`` refuses a stack that lacks any of these (``missing_pulumi_fields``),
``gpufleet validate`` warns about them (``pulumi_warnings``), and the spec
reference in the README lists them (``requirements_reference``), all from
``REQUIREMENTS`` below.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from gpufleet.errors import SpecIssue
from gpufleet.spec.models import ClusterSpec, HostSpec

NAMES_SHOWN = 10


@dataclass(frozen=True)
class Requirement:
    """One field the program cannot do without, with why and what to do.

    ``lacks`` takes the spec, or for a ``hosts[].`` field each host in turn.
    """

    field: str
    needs: str
    message: str
    lacks: Callable[[ClusterSpec], bool] | None = None
    host_lacks: Callable[[HostSpec], bool] | None = None


REQUIREMENTS = (
    Requirement(
        field="network.fabric",
        needs="a named fabric (infiniband, roce or ethernet), not auto: the program has no probed host "
        "facts, and an RDMA host would get no /dev/infiniband, so NCCL would silently fall back to TCP",
        message="is 'auto', but 'pulumi up' has no probed host facts to decide from: name the "
        "fabric (infiniband, roce or ethernet); 'gpufleet lint --facts DIR' tells which",
        lacks=lambda spec: spec.network.fabric == "auto",
    ),
    Requirement(
        field="hosts[].host_key",
        needs="on every host, the host's own sshd public key: the runner pins it, so nothing trusts "
        "a key on first use",
        message="is required to stand the host up with Pulumi: add the host's own sshd key (the content "
        "of /etc/ssh/ssh_host_ed25519_key.pub on the host, checked out of band) so the runner never "
        "trusts a key on first use",
        host_lacks=lambda host: not host.host_key,
    ),
)


def _lacking_hosts(requirement: Requirement, spec: ClusterSpec) -> list[tuple[int, HostSpec]]:
    lacks = requirement.host_lacks
    return [] if lacks is None else [(index, host) for index, host in enumerate(spec.hosts) if lacks(host)]


def missing_pulumi_fields(spec: ClusterSpec) -> list[SpecIssue]:
    """What the spec allows but the Pulumi program cannot do without, one issue per place."""
    issues = []
    for requirement in REQUIREMENTS:
        if requirement.lacks is not None and requirement.lacks(spec):
            issues.append(SpecIssue(requirement.field, requirement.message))
        leaf = requirement.field.removeprefix("hosts[].")
        issues += [
            SpecIssue(f"hosts[{index}].{leaf}", f"host {host.name!r}: {requirement.message}")
            for index, host in _lacking_hosts(requirement, spec)
        ]
    return issues


def _names(hosts: list[tuple[int, HostSpec]]) -> str:
    names = ", ".join(host.name for _, host in hosts[:NAMES_SHOWN])
    return names if len(hosts) <= NAMES_SHOWN else f"{names} and {len(hosts) - NAMES_SHOWN:,} more"


def pulumi_warnings(spec: ClusterSpec) -> list[str]:
    """For a ``provisioner: pulumi`` spec, one warning per requirement it does not meet yet."""
    if spec.provisioner != "pulumi":
        return []
    warnings = []
    for requirement in REQUIREMENTS:
        if requirement.lacks is not None and requirement.lacks(spec):
            warnings.append(
                f"{requirement.field}: 'pulumi up' refuses this stack; it needs {requirement.needs}"
            )
        hosts = _lacking_hosts(requirement, spec)
        if hosts:
            leaf = requirement.field.removeprefix("hosts[].")
            warnings.append(
                f"hosts without {leaf} ({_names(hosts)}): 'pulumi up' refuses them; it needs "
                f"{requirement.needs}; add {requirement.field}"
            )
    return warnings


def requirements_reference() -> list[str]:
    """Markdown lines for the README's spec reference."""
    lines = ["", "`pulumi up` needs, beyond a valid spec (it stops, naming the field, without them):", ""]
    return lines + [f"- `{requirement.field}`: {requirement.needs}." for requirement in REQUIREMENTS]
