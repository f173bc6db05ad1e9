"""Locks written by hand for bases this machine cannot pull (production images: no registry here).

They have the shape `gpufleet lock` writes (the same models) and inputs that fit
the spec, so that rendering, the Pulumi program and the lock checks can be
tested on them; real locks are resolved in tests/local/images and the CLI tests.
"""

from __future__ import annotations

from gpufleet.environment.lockfile import AptLock, AptPin, Lock, LockedBase, PythonPin
from gpufleet.environment.packages import environment_inputs
from gpufleet.spec.models import ClusterSpec

SNAPSHOT = "20261204T000000Z"


def _hash(name: str) -> str:
    return "sha256:" + (name.encode().hex() * 64)[:64]


def sample_lock(spec: ClusterSpec, snapshot: str | None = SNAPSHOT) -> Lock:
    """A lock of ``spec``'s packages as if resolved in its base on 2026-12-04."""
    inputs = environment_inputs(spec)
    python = sorted(
        {p.split("<")[0].split(">")[0].split("=")[0].split("[")[0] for p in inputs.python_packages}
    )
    sources = (f"deb http://snapshot.ubuntu.com/ubuntu/{snapshot}/ jammy main universe",) if snapshot else ()
    return Lock(
        inputs=inputs,
        base=LockedBase(reference=inputs.base, digest=_hash(inputs.base), python="3.11.9", os="ubuntu 22.04"),
        python=tuple(PythonPin(name=name, version="1.0.0", hashes=(_hash(name),)) for name in python),
        base_python=("numpy==2.1.2", "torch==2.9.0+cu128"),
        apt=AptLock(
            archive="ubuntu" if snapshot else None,
            snapshot=snapshot,
            sources=sources,
            packages=tuple(AptPin(name=name, version="1.0-1ubuntu1") for name in sorted(inputs.apt_packages)),
        ),
    )
