"""A cluster as the launcher uses it: its spec, its inventory, and open SSH connections."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from gpufleet.errors import GpufleetError
from gpufleet.inventory import Inventory
from gpufleet.launcher.connections import HostConnections
from gpufleet.launcher.remote import agent_command
from gpufleet.launcher.runs import RUNS_FOLDER, RunLocation, run_location
from gpufleet.spec.models import ClusterSpec


@dataclass
class Cluster:
    """A spec, its inventory, and open connections to its hosts (all, or those reachable)."""

    spec: ClusterSpec
    inventory: Inventory
    hosts: HostConnections
    location: RunLocation = field(init=False)

    def __post_init__(self) -> None:
        self.location = run_location(self.spec)
        spec_hosts = [host.name for host in self.spec.hosts]
        if sorted(spec_hosts) != sorted(self.inventory_names()):
            raise GpufleetError(
                f"the spec's hosts ({', '.join(spec_hosts)}) differ from the inventory's "
                f"({', '.join(self.inventory_names())}): re-run gpufleet up / gpufleet inventory"
            )

    def inventory_names(self) -> list[str]:
        return [host.name for host in self.inventory.hosts]

    @property
    def names(self) -> list[str]:
        """Every host of the spec, in spec order (hosts[0] runs the rendezvous)."""
        return [host.name for host in self.spec.hosts]

    @property
    def reachable(self) -> list[str]:
        """The hosts connected now, in spec order."""
        connected = set(self.hosts.names)
        return [name for name in self.names if name in connected]

    @property
    def unreachable(self) -> dict[str, str]:
        """Host name -> why it could not be reached."""
        return dict(self.hosts.unreachable)

    def python(self, name: str) -> str:
        return self.inventory.host(name).python

    def agent(self, name: str, *args: str, timeout: float | None = 60) -> dict[str, object]:
        """Run the agent on ``name``; its one JSON line, or a clear error."""
        result = self.hosts.run(name, agent_command(self.python(name), *args), timeout=timeout)
        try:
            data = json.loads(result.stdout.strip().splitlines()[-1]) if result.stdout.strip() else None
        except ValueError:
            data = None
        if not result.ok or not isinstance(data, dict):
            raise GpufleetError(
                f"{name}: the launcher's helper failed: {(result.stderr or result.stdout).strip()}"
            )
        if "error" in data:
            raise GpufleetError(f"{name}: {data['error']}")
        return data

    def run_roots(self) -> dict[str, str]:
        """The runs root per reachable host; a home-folder root resolved to an absolute path."""
        if self.location.shared:
            return {name: self.location.root for name in self.names}

        def home(name: str) -> str:
            return str(PurePosixPath(self.hosts.sftp(name).normalize(".")) / RUNS_FOLDER)

        return self.hosts.each(home, self.reachable).raise_first()

    def record_hosts(self) -> list[str]:
        """Where run.json lives (host 0 only on a shared folder, else every host), of those reachable."""
        if self.location.shared:
            return self.reachable[:1]
        return self.reachable
