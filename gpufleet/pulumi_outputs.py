"""Pulumi stack outputs <-> the inventory. Pure: no pulumi import, no I/O.

The Pulumi program (``components/``) exports what :func:`host_output` builds;
``gpufleet inventory`` reads ``pulumi stack output --json --show-secrets`` back
through :func:`inventory_from_outputs`. Both sides use the names below, so the
two cannot drift apart.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from gpufleet.errors import GpufleetError
from gpufleet.inventory import Inventory, InventoryHost
from gpufleet.spec.keys import check_public_key_line

CLUSTER = "cluster"
INVENTORY = "inventory"
CONTROLLER_PRIVATE_KEY = "controller_private_key"
CONTROLLER_PUBLIC_KEY = "controller_public_key"
IMAGE_DIGEST = "image_digest"
NCCL_ENV = "nccl_env"

REQUIRED = (CLUSTER, INVENTORY, CONTROLLER_PRIVATE_KEY)


def host_output(
    *, name: str, address: str, ssh_address: str, ssh_port: int, user: str, host_key: str
) -> dict[str, Any]:
    """One host of the ``inventory`` output; ``known_hosts`` is the pinned line for it."""
    host = InventoryHost(
        name=name,
        address=address,
        ssh_address=ssh_address,
        ssh_port=ssh_port,
        user=user,
        host_key=" ".join(host_key.split()[:2]),
    )
    return {**host.model_dump(exclude={"python"}), "known_hosts": host.known_hosts_line()}


def parse_stack_outputs(text: str) -> dict[str, Any]:
    """``pulumi stack output --json`` text -> a mapping, or a GpufleetError saying why not."""
    try:
        outputs = json.loads(text)
    except ValueError as error:
        raise GpufleetError(f"pulumi stack output did not print JSON: {error}") from None
    if not isinstance(outputs, dict):
        raise GpufleetError("pulumi stack output did not print a JSON object")
    return outputs


def _host(index: int, entry: Any) -> InventoryHost:
    where = f"output {INVENTORY}[{index}]"
    if not isinstance(entry, dict):
        raise GpufleetError(f"{where} is not an object")
    fields = {k: v for k, v in entry.items() if k != "known_hosts"}
    if isinstance(fields.get("ssh_port"), float) and fields["ssh_port"].is_integer():
        fields["ssh_port"] = int(fields["ssh_port"])  # JSON numbers may come back as floats
    try:
        host = InventoryHost.model_validate(fields)
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
        raise GpufleetError(f"{where}: {problems}") from None
    problem = check_public_key_line(host.host_key)
    if problem:
        raise GpufleetError(f"{where}.host_key: {problem}")
    if "known_hosts" in entry and entry["known_hosts"] != host.known_hosts_line():
        raise GpufleetError(f"{where}: known_hosts does not match ssh_address/ssh_port/host_key")
    return host


def inventory_from_outputs(outputs: Mapping[str, Any]) -> tuple[Inventory, str]:
    """Stack outputs -> (inventory, controller private key in OpenSSH format)."""
    missing = [name for name in REQUIRED if outputs.get(name) in (None, "", [])]
    if missing:
        raise GpufleetError(
            f"the stack has no output {', '.join(missing)}: run 'pulumi up' for this stack first "
            "(or it is not a gpufleet stack)"
        )
    key = outputs[CONTROLLER_PRIVATE_KEY]
    if not isinstance(key, str) or "PRIVATE KEY" not in key:
        raise GpufleetError(
            f"output {CONTROLLER_PRIVATE_KEY} is not a private key; it is a secret: read it with "
            "--show-secrets"
        )
    entries = outputs[INVENTORY]
    if not isinstance(entries, list):
        raise GpufleetError(f"output {INVENTORY} is not a list of hosts")
    nccl = outputs.get(NCCL_ENV) or {}
    if not isinstance(nccl, dict) or not all(isinstance(v, dict) for v in nccl.values()):
        raise GpufleetError(f"output {NCCL_ENV} is not a mapping of host name to environment")
    try:
        inventory = Inventory(
            cluster=str(outputs[CLUSTER]),
            provisioner="pulumi",
            hosts=[_host(index, entry) for index, entry in enumerate(entries)],
            image_digest=outputs.get(IMAGE_DIGEST) or None,
            nccl_env={str(h): {str(k): str(v) for k, v in env.items()} for h, env in nccl.items()},
        )
    except ValidationError as error:
        raise GpufleetError(f"the stack outputs do not form an inventory: {error}") from None
    return inventory, key
