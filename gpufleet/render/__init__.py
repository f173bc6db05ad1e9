"""Spec -> files: the Dockerfile, hostfile, and per host sshd_config,
authorized_keys, nftables.conf, nccl.env and docker-compose.yml."""

from gpufleet.render.renderer import render_cluster, write_tree

__all__ = ["render_cluster", "write_tree"]
