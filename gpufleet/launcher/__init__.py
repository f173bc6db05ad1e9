"""The launcher: SSH to every host of a cluster (Fabric), preflight, and torchrun runs."""
