"""GpuHost: one GPU host's Docker daemon (over SSH), firewall, image, NAS volumes and container."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_docker as docker
from pulumi_command import remote

from components.container_args import container_args
from components.host_firewall import HostFirewall, HostFirewallArgs
from components.image_delivery import ImageDelivery, ImageDeliveryArgs
from components.nas_volume import NasVolume, NasVolumeArgs
from components.remote_access import docker_ssh_opts, ssh_target, write_peers_script
from gpufleet.derive.container import ContainerSettings, container_settings, host_peers_dir, peer_hosts
from gpufleet.derive.firewall import FirewallPlan
from gpufleet.derive.nccl import NcclEnv
from gpufleet.derive.sshd import authorized_keys
from gpufleet.pulumi_outputs import host_output
from gpufleet.render.renderer import render_nftables, render_sshd_config
from gpufleet.spec.models import ClusterSpec, HostSpec

RESOURCE_TYPE = "gpufleet:components:GpuHost"


@dataclass(frozen=True)
class GpuHostArgs:
    """Validated spec objects plus the keys ClusterKeys made.

    A dataclass, not a TypedDict of Inputs: the host's settings come from the
    validated spec through the pure derivations, which need the spec objects
    themselves; only the keys are (secret) Outputs.
    """

    spec: ClusterSpec
    host: HostSpec
    nccl: NcclEnv
    firewall_plan: FirewallPlan
    image_reference: pulumi.Input[str]
    controller_public_key: pulumi.Input[str]
    host_public_key: pulumi.Input[str]
    host_private_key: pulumi.Input[str]
    """Secret: the container sshd's host key."""
    runner_private_key: pulumi.Input[str]
    """Secret: the key the runner logs into the host's own sshd with."""


class GpuHost(pulumi.ComponentResource):
    inventory_entry: pulumi.Output[dict[str, Any]]
    """The host in the inventory: how the launcher reaches its container."""
    container_id: pulumi.Output[str]

    def __init__(self, name: str, args: GpuHostArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(RESOURCE_TYPE, name, None, opts)
        spec, host = args.spec, args.host
        target = ssh_target(spec, host)
        provider = docker.Provider(
            f"{name}-docker",
            host=target.docker_url,
            ssh_opts=docker_ssh_opts(target, spec.runner.identity_file),
            opts=pulumi.ResourceOptions(parent=self),
        )
        on_host = pulumi.ResourceOptions(parent=self, provider=provider)

        connection = remote.ConnectionArgs(
            host=target.host,
            port=target.port,
            user=target.user,
            host_key=target.host_key,
            private_key=pulumi.Output.secret(args.runner_private_key),
        )
        firewall = HostFirewall(
            f"{name}-firewall",
            HostFirewallArgs(
                connection=connection,
                nftables_conf=render_nftables(spec, host, args.firewall_plan),
                sudo=target.needs_sudo,
            ),
            opts=pulumi.ResourceOptions(parent=self),
        )
        image_id = self._image(name, args, on_host, firewall)

        settings = container_settings(spec, host, args.nccl)
        peers = remote.Command(
            f"{name}-peers",
            connection=connection,
            create=write_peers_script(host_peers_dir(spec.name), target.needs_sudo),
            # A new stdin (a host added or removed) is an update: create runs again and replaces the
            # file, which the running container reads; nothing else of this host changes.
            stdin=peer_hosts(spec),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[firewall]),
        )
        volume_names = self._volumes(name, args.spec, settings, provider)

        keys = pulumi.Output.from_input(args.controller_public_key).apply(
            lambda controller: authorized_keys(spec, extra_keys=(controller,))
        )
        container = docker.Container(
            f"{name}-container",
            **container_args(
                settings,
                image=image_id,
                config_contents={
                    "sshd_config": render_sshd_config(spec, host),
                    "authorized_keys": keys,
                    "ssh_host_ed25519_key": pulumi.Output.secret(args.host_private_key),
                },
                volume_names=volume_names,
                peers_host_dir=host_peers_dir(spec.name),
            ),
            # The container's sshd listens on the host network: lock the host down first.
            opts=pulumi.ResourceOptions(parent=self, provider=provider, depends_on=[firewall, peers]),
        )
        self.container_id = container.id
        self.inventory_entry = pulumi.Output.all(container.id, args.host_public_key).apply(
            lambda values: host_output(
                name=host.name,
                address=host.address,
                ssh_address=host.reach_address,
                ssh_port=spec.ssh.port,
                user=spec.ssh.user,
                host_key=str(values[1]),
            )
        )
        self.register_outputs({"inventory_entry": self.inventory_entry, "container_id": self.container_id})

    def _image(
        self, name: str, args: GpuHostArgs, on_host: pulumi.ResourceOptions, firewall: HostFirewall
    ) -> pulumi.Input[str]:
        """The id of the image on the host: pulled from the registry, or streamed (distribution ssh)."""
        spec = args.spec
        if spec.distribution == "ssh":  # no registry: streamed over the pinned login, verified by id
            delivery = ImageDelivery(
                f"{name}-image",
                ImageDeliveryArgs(
                    reference=args.image_reference,
                    target=ssh_target(spec, args.host),
                    identity_file=spec.runner.identity_file,
                ),
                opts=pulumi.ResourceOptions(parent=self, depends_on=[firewall]),
            )
            return delivery.image_id
        pulled = docker.RemoteImage(
            f"{name}-image", name=args.image_reference, keep_locally=True, opts=on_host
        )
        return pulled.image_id

    def _volumes(
        self, name: str, spec: ClusterSpec, settings: ContainerSettings, provider: docker.Provider
    ) -> dict[str, pulumi.Input[str]]:
        """Each volume's name (NAS shares, the workspace) as its resource's output, for the dependency."""
        volume_names: dict[str, pulumi.Input[str]] = {}
        for share, volume in zip(spec.nas, settings.volumes, strict=True):
            nas = NasVolume(
                f"{name}-nas-{share.name}",
                NasVolumeArgs(
                    volume_name=volume.name, driver_opts=volume.driver_opts, labels=settings.labels
                ),
                opts=pulumi.ResourceOptions(parent=self, providers=[provider]),
            )
            volume_names[volume.name] = nas.name
        # Kept by `pulumi destroy` and by a replaced container: the team's notebooks and files live here.
        workspace = docker.Volume(
            f"{name}-workspace",
            name=settings.workspace.name,
            driver="local",
            labels=[docker.VolumeLabelArgs(label=k, value=v) for k, v in settings.labels.items()],
            opts=pulumi.ResourceOptions(parent=self, provider=provider, retain_on_delete=True),
        )
        volume_names[settings.workspace.name] = workspace.name
        return volume_names
