"""gpufleet: one declarative spec for a multi-node GPU training cluster.

The spec (``spec/``) is validated once, turned into per-host settings by pure
functions (``derive/``), and expressed as files (``render/``), as Pulumi
resources (``components/`` at the project root) or as a local cluster
(``local/``). The launcher reads the inventory that either provisioner writes.
"""

__version__ = "0.1.0"
