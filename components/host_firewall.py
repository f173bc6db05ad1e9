"""HostFirewall: the rendered nftables.conf on the host, over SSH (pulumi-command)."""

from __future__ import annotations

import hashlib
from typing import TypedDict

import pulumi
from pulumi_command import remote

from gpufleet.derive.firewall import TABLE_FAMILY, TABLE_NAME

RESOURCE_TYPE = "gpufleet:components:HostFirewall"


def apply_script(sudo: bool) -> str:
    """Reads the ruleset on stdin, checks it with ``nft -c``, then applies it.

    The file only ever replaces its own table (it starts with 'table ...;
    delete table ...'), so Docker's and the host's other rules stay.
    """
    nft = "sudo -n nft" if sudo else "nft"
    return (
        'set -eu; umask 077; f=$(mktemp); trap \'rm -f "$f"\' EXIT; cat > "$f"; '
        f'{nft} -c -f "$f"; {nft} -f "$f"'
    )


def remove_script(sudo: bool) -> str:
    """Deletes only the gpufleet table, and succeeds when it is already gone."""
    nft = "sudo -n nft" if sudo else "nft"
    table = f"{TABLE_FAMILY} {TABLE_NAME}"
    return f"set -eu; if {nft} list table {table} >/dev/null 2>&1; then {nft} delete table {table}; fi"


def content_trigger(nftables_conf: str) -> str:
    return hashlib.sha256(nftables_conf.encode()).hexdigest()


class HostFirewallArgs(TypedDict):
    connection: pulumi.Input[remote.ConnectionArgs]
    """How to reach the host's own sshd; must carry host_key (pulumi-command skips the check without it)."""
    nftables_conf: str
    """The rendered nftables.conf for this host (plain text: it is known before any deployment)."""
    sudo: bool
    """Run nft through 'sudo -n' (the runner's login is not root)."""


class HostFirewall(pulumi.ComponentResource):
    """Default-drop input, SSH from admin networks, everything from cluster peers."""

    content_sha256: pulumi.Output[str]
    """sha256 of the nftables.conf that is applied (to see in outputs which ruleset a host has)."""

    def __init__(self, name: str, args: HostFirewallArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(RESOURCE_TYPE, name, None, opts)
        conf = args["nftables_conf"]
        remote.Command(
            f"{name}-nftables",
            connection=args["connection"],
            create=apply_script(args["sudo"]),
            delete=remove_script(args["sudo"]),
            # No `triggers`: a change to them REPLACES the command, and the old one's delete
            # would then drop the table the new one just applied, leaving the host open.
            # A new stdin is an update instead, which re-runs create: the file replaces
            # its own table atomically.
            stdin=conf,
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.content_sha256 = pulumi.Output.from_input(content_trigger(conf))
        self.register_outputs({"content_sha256": self.content_sha256})
