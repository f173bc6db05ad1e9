"""The local provisioner: a real multi-host cluster on one Linux machine.

For stacks with ``provisioner: local``. Each declared host is a network
namespace on a private LAN (a bridge in its own namespace), running a real
OpenSSH sshd with its RENDERED sshd_config and authorized_keys and its
RENDERED nftables.conf. Needs root.

Contract (stable; the launcher and the tests build on it):

``cluster_up(spec, project_root) -> Inventory``
    Builds the cluster and returns once a real key login (paramiko, pinned
    host key, RejectPolicy) has run the host's Python as ``spec.ssh.user``
    on every host. Idempotent: on a cluster that is already up it changes
    nothing and returns the stored inventory. A cluster that is up with a
    different spec, or only partly up, raises GpufleetError (run
    ``cluster_down`` first). Any failure midway rolls everything back.
    Raises GpufleetError (never a traceback) for what a user can fix: not
    root, missing tools, a non-local provisioner, colliding addresses.

``cluster_down(spec, project_root) -> None``
    Kills every process of the cluster (each host's sshd process group, then
    whatever is left in its namespaces), deletes the namespaces (their links
    and nft tables go with them), the controller's link and the state folder.
    Idempotent: a cluster that is not up is not an error.

``cluster_is_up(spec, project_root) -> bool``

State lives in ``gpufleet.inventory.state_dir(project_root, spec.name)``
(mode 0700): ``inventory.json``, ``id_ed25519`` (controller key),
``known_hosts`` (pinned host keys) as written by
``gpufleet.inventory.write_state``, plus this provisioner's own files:
``local.json`` (what was created, pids), ``hosts/<host>/sshd.log``, and the
NAS stand-ins ``nas/<share>/``.

What a host looks like from inside (``gpufleet ssh HOST`` or the inventory):

- namespace ``gpufleet-<cluster>-<host>``; the LAN is
  ``gpufleet-<cluster>-lan``; the controller (root namespace) has the first
  free address inside both ``ssh.admin_cidrs`` and ``network.cluster_cidr``;
- interface ``host.ifname`` (default eth0) with ``host.address``;
- hostname ``host.name``; /etc/hosts maps every host name to its address;
- login user ``spec.ssh.user`` (uid free on this machine, home
  /home/<user>, private to the host), key-only, on ``spec.ssh.port``;
- every ``spec.nas`` share at its ``mount`` path: one folder shared by all
  hosts, writable by the login user (read-only where ``read_only``);
- ``InventoryHost.python`` is the absolute path of the controller's venv
  Python (the same files are visible on every host).
"""

from gpufleet.local.provisioner import cluster_down, cluster_is_up, cluster_up

__all__ = ["cluster_down", "cluster_is_up", "cluster_up"]
