"""Pure derivations: spec (+ probed facts) -> per-host settings. No I/O here.

Every consumer (the renderer, the Pulumi components, the local provisioner,
the launcher) reads these, so they cannot disagree.
"""
