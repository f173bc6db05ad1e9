"""The inventory: the one contract between "stand the cluster up" and "use it".

Whatever stood the cluster up (``gpufleet up`` for local stacks, ``gpufleet
inventory`` from Pulumi outputs) writes the same three files into a state
folder, by default ``<project>/.gpufleet/<cluster>/``:

- ``inventory.json``: the hosts and how to reach them (this model);
- ``id_ed25519``: the cluster controller's private key (mode 0600);
- ``known_hosts``: each host's pinned sshd host key.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gpufleet.derive.container import IMAGE_PYTHON
from gpufleet.errors import GpufleetError, InputError, shown

INVENTORY_FILE = "inventory.json"
KEY_FILE = "id_ed25519"
KNOWN_HOSTS_FILE = "known_hosts"
STATE_DIR = ".gpufleet"


class InventoryHost(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    address: str = Field(description="Training-network address (rendezvous, NCCL).")
    ssh_address: str = Field(description="Where the controller connects.")
    ssh_port: int = Field(description="The training container's sshd port.")
    user: str
    host_key: str = Field(description="sshd host public key, '<type> <base64>'.")
    python: str = Field(
        default=IMAGE_PYTHON,
        description="Interpreter the launcher runs on the host (torchrun runs as '<python> -m "
        "torch.distributed.run'): the training image's own Python; the project's venv on "
        "local hosts of the process runtime.",
    )

    def known_hosts_line(self) -> str:
        host = self.ssh_address if self.ssh_port == 22 else f"[{self.ssh_address}]:{self.ssh_port}"
        return f"{host} {self.host_key}"


class Inventory(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    version: int = 1
    cluster: str
    provisioner: str = Field(description="'local' or 'pulumi': who stood the cluster up.")
    hosts: list[InventoryHost]
    image_digest: str | None = None
    manifest_digest: str | None = Field(
        default=None,
        description="sha256 of the image's environment manifest (its org.gpufleet.manifest label), "
        "when the provisioner built or inspected the image; preflight holds every host to it.",
    )
    image_id: str | None = Field(default=None, description="The image id every host runs, when known.")
    lock_digest: str | None = Field(
        default=None, description="sha256 of the stack's lock file that the image installs, when known."
    )
    nccl_env: dict[str, dict[str, str]] = Field(
        default_factory=dict, description="Per host name, the NCCL env it was set up with."
    )

    def host(self, name: str) -> InventoryHost:
        for host in self.hosts:
            if host.name == name:
                return host
        known = ", ".join(h.name for h in self.hosts)
        raise InputError(f"no host {shown(name)} in cluster {self.cluster!r} (hosts: {known})")


def state_dir(project_root: Path, cluster: str) -> Path:
    return project_root / STATE_DIR / cluster


def write_state(folder: Path, inventory: Inventory, private_key_openssh: str) -> None:
    """Write inventory, key (0600) and known_hosts; the folder is private (0700)."""
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(folder, 0o700)
    key_path = folder / KEY_FILE
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(
            private_key_openssh if private_key_openssh.endswith("\n") else private_key_openssh + "\n"
        )
    os.chmod(key_path, 0o600)
    (folder / KNOWN_HOSTS_FILE).write_text("".join(h.known_hosts_line() + "\n" for h in inventory.hosts))
    (folder / INVENTORY_FILE).write_text(inventory.model_dump_json(indent=2) + "\n")


def _unreadable(path: Path) -> GpufleetError:
    return GpufleetError(
        f"cannot read {path}: the state folder belongs to root (mode 0700; a local cluster is "
        "stood up as root); run this command as root (sudo .venv/bin/gpufleet ...)"
    )


def load_inventory(folder: Path) -> Inventory:
    path = folder / INVENTORY_FILE
    try:
        # Path.is_file raises PermissionError (Python 3.11) when the folder is not traversable.
        if not path.is_file():
            raise GpufleetError(
                f"no inventory at {path}: stand the cluster up first (gpufleet up for a local "
                "stack, or pulumi up then gpufleet inventory)"
            )
        text = path.read_text()
    except PermissionError:
        raise _unreadable(path) from None
    except UnicodeDecodeError:
        raise GpufleetError(f"{path}: not text (the file is damaged); {_REWRITE}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise GpufleetError(
            f"{path}, line {error.lineno} column {error.colno}: not valid JSON ({error.msg}); {_REWRITE}"
        ) from None
    try:
        return Inventory.model_validate(data)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in item['loc']) or '(top level)'}: {item['msg']}"
            for item in error.errors()
        )
        raise GpufleetError(f"{path}: not a valid inventory ({problems}); {_REWRITE}") from None


_REWRITE = "re-run gpufleet up (local) or gpufleet inventory (Pulumi) to rewrite it"
