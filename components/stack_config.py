"""The stack's ``gpufleet:*`` config -> what the program needs, or a pulumi.RunError.

Spec errors read exactly like ``gpufleet validate``'s: one
``Pulumi.<stack>.yaml: cluster.<path>: <message>`` line per problem.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pulumi

from gpufleet.errors import SpecError, SpecIssue
from gpufleet.spec import ClusterSpec, parse_spec
from gpufleet.spec.pulumi_requirements import missing_pulumi_fields

RUNNER_KEY_CONFIG = "runner_private_key"
BUILD_CONFIG = "build_image"


def _fail(source: str, issues: list[SpecIssue]) -> pulumi.RunError:
    return pulumi.RunError("invalid cluster spec:\n" + "\n".join(SpecError(source, issues).lines()))


def validated_spec(raw: Any, stack: str) -> ClusterSpec:
    """The same models and messages as ``gpufleet validate``, plus what Pulumi needs."""
    source = f"Pulumi.{stack}.yaml"
    try:
        spec = parse_spec(raw, source=source)
    except SpecError as error:
        raise _fail(source, error.issues) from None
    if spec.provisioner != "pulumi":
        raise _fail(
            source,
            [
                SpecIssue(
                    "provisioner",
                    f"is {spec.provisioner!r}: this stack is stood up with 'gpufleet up --stack "
                    f"{stack}', not 'pulumi up'",
                )
            ],
        )
    missing = missing_pulumi_fields(spec)
    if missing:
        raise _fail(source, missing)
    return spec


def runner_private_key(config: pulumi.Config, spec: ClusterSpec) -> pulumi.Output[str]:
    """The secret config value, else the content of runner.identity_file, always as a secret."""
    secret = config.get_secret(RUNNER_KEY_CONFIG)
    if secret is not None:
        return secret
    path = Path(os.path.expanduser(spec.runner.identity_file))
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise pulumi.RunError(
            f"cannot read runner.identity_file {spec.runner.identity_file} ({error.strerror}): point "
            f"it at the key that logs into the hosts, or run 'pulumi config set --secret "
            f"gpufleet:{RUNNER_KEY_CONFIG} < KEYFILE'"
        ) from None
    return pulumi.Output.secret(text)
