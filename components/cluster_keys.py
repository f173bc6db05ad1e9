"""ClusterKeys: the controller's login key and one sshd host key per node (pulumi-tls)."""

from __future__ import annotations

from typing import TypedDict

import pulumi
import pulumi_tls as tls

RESOURCE_TYPE = "gpufleet:components:ClusterKeys"
ALGORITHM = "ED25519"


class ClusterKeysArgs(TypedDict):
    host_names: list[str]
    """Node names; each gets its own sshd host key. Plain strings: they name child resources."""


def _public_line(key: tls.PrivateKey) -> pulumi.Output[str]:
    # '<type> <base64>' without the trailing newline pulumi-tls adds.
    return key.public_key_openssh.apply(lambda text: " ".join(text.split()[:2]))


class ClusterKeys(pulumi.ComponentResource):
    """Keys are generated here, so the launcher pins host keys instead of trusting on first use.

    Private halves are wrapped as Pulumi secrets here as well as by pulumi-tls:
    they stay encrypted in the state and masked in every output.
    """

    controller_public_key: pulumi.Output[str]
    """The controller's public key line; added to every container's authorized_keys."""
    controller_private_key: pulumi.Output[str]
    """The controller's private key (OpenSSH format), secret."""
    host_public_keys: dict[str, pulumi.Output[str]]
    """Per node, its sshd host public key line: what the inventory pins."""
    host_private_keys: dict[str, pulumi.Output[str]]
    """Per node, its sshd host private key, secret: uploaded into the container."""

    def __init__(self, name: str, args: ClusterKeysArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(RESOURCE_TYPE, name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        controller = tls.PrivateKey(f"{name}-controller", algorithm=ALGORITHM, opts=child)
        self.controller_public_key = _public_line(controller)
        self.controller_private_key = pulumi.Output.secret(controller.private_key_openssh)
        self.host_public_keys = {}
        self.host_private_keys = {}
        for host in args["host_names"]:
            key = tls.PrivateKey(f"{name}-host-{host}", algorithm=ALGORITHM, opts=child)
            self.host_public_keys[host] = _public_line(key)
            self.host_private_keys[host] = pulumi.Output.secret(key.private_key_openssh)
        self.register_outputs(
            {
                "controller_public_key": self.controller_public_key,
                "controller_private_key": self.controller_private_key,
                "host_public_keys": self.host_public_keys,
            }
        )
