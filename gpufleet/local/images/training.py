"""The training image: built from the RENDERED image context (the files `gpufleet render` writes).

Tagged by a hash of those files and the base's image id, so it is rebuilt
only when they change; labelled with the sha256 of the environment manifest
its build wrote (/etc/gpufleet/environment.json).
"""

from __future__ import annotations

import hashlib
import re
import shutil
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from gpufleet.environment import pip_settings
from gpufleet.environment.docker_client import DockerClient, inspect_image
from gpufleet.environment.lockfile import Lock, lock_bytes, lock_digest
from gpufleet.errors import GpufleetError
from gpufleet.local.images.base import Base, base_problem, ensure_base
from gpufleet.local.images.builder import BuildDaemon, build_daemon
from gpufleet.local.images.cache import (
    DIGEST_CHARS,
    BuildStep,
    LocalImage,
    clean_leftovers,
    inputs_digest,
    machine_lock,
    sha256_hex,
    stored_labels,
)
from gpufleet.local.images.locking import cached_lock
from gpufleet.local.images.steps import Progress, open_log, run_step
from gpufleet.render.image_context import MANIFEST_LABEL, MANIFEST_PATH
from gpufleet.render.renderer import RenderedTree, render_image_context, write_tree
from gpufleet.spec.image_ref import ImageRef
from gpufleet.spec.models import ClusterSpec

IMAGE_RECIPE_VERSION = 2
"""Bump when the training image's build steps change."""

TAG_PREFIX = "gpufleet-"
"""Training images are tagged ``<image.name>:gpufleet-<12 hex>``."""

INPUTS_LABEL = "org.gpufleet.inputs"


def image_inputs_digest(files: Mapping[str, bytes], base_id: str) -> str:
    return inputs_digest(
        {
            "kind": "gpufleet training image",
            "version": IMAGE_RECIPE_VERSION,
            "files": {name: sha256_hex(data) for name, data in sorted(files.items())},
            "base": base_id,
        }
    )


def image_tag(image_name: str, digest: str) -> str:
    """``registry.example.com/ml/chatbot-train:v2.9`` -> ``...chatbot-train:gpufleet-<12 hex>``."""
    return str(ImageRef.parse(image_name).tagged(TAG_PREFIX + digest[:DIGEST_CHARS]))


@dataclass(frozen=True)
class BuildContext:
    files: RenderedTree
    digest: str  # of the inputs: every file, the base image id
    tag: str


def build_context(spec: ClusterSpec, lock: Lock, base_id: str) -> BuildContext:
    """The rendered image context for ``lock``, and the image's content tag."""
    files = render_image_context(spec, lock)
    digest = image_inputs_digest({str(k): v.encode() for k, v in files.items()}, base_id)
    return BuildContext(files, digest, image_tag(spec.image.name, digest))


def write_context(context: BuildContext, folder: Path) -> None:
    """The files as ``gpufleet render`` writes them."""
    write_tree(context.files, folder)


def hash_mismatch(log_text: str) -> str | None:
    """The packages pip refused for their hashes (a hand-edited lock, or an index that changed a file)."""
    if "DO NOT MATCH THE HASHES" not in log_text:
        return None
    after = log_text.split("DO NOT MATCH THE HASHES", 1)[1]
    names = re.findall(r"^\s*(?:#\d+ [\d.]+ )?\s*([A-Za-z0-9_.-]+==[^\s:]+) from ", after, flags=re.MULTILINE)
    return ", ".join(dict.fromkeys(names)) or "a package"


def docker_build(
    docker: DockerClient,
    context: BuildContext,
    tag: str,
    progress: Progress,
    buildkit: bool | None = None,
    log_name: str | None = None,
    no_cache: bool = False,
) -> Path:
    """``docker build --network host`` of the context; the log's path. ``buildkit``: the client's choice
    unless given (True: BuildKit's plain progress; False: the classic builder)."""
    buildkit = docker.buildkit if buildkit is None else buildkit
    log = open_log(log_name or f"image-{context.digest[:DIGEST_CHARS]}")
    folder = Path(tempfile.mkdtemp(prefix="gpufleet-context-"))
    args = pip_settings.build_args(pip_settings.machine_settings())
    try:
        write_context(context, folder)
        argv = ["build", "--network", "host", "--label", f"{INPUTS_LABEL}={context.digest}", "--tag", tag]
        argv += [arg for key, value in sorted(args.items()) for arg in ("--build-arg", f"{key}={value}")]
        argv += {True: ["--progress", "plain"], False: ["--force-rm"], None: []}[buildkit]
        argv += ["--no-cache"] if no_cache else []
        step = f"{tag}: docker build" + (" (classic builder)" if buildkit is False else "")
        try:
            run_step(step, [docker.argv(*argv, str(folder))], log, progress, env=docker.environment(buildkit))
        except GpufleetError:
            refused = hash_mismatch(log.read_text(errors="replace"))
            if refused is None:
                raise
            raise GpufleetError(
                f"image: pip refused {refused}: its file does not match the lock's sha256 (a hand-edited "
                f"lock, or the index replaced the file); check the lock, then `gpufleet lock` (log: {log})"
            ) from None
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return log


def manifest_digest(docker: DockerClient, image: str) -> str:
    """sha256 of the manifest the build wrote into ``image``."""
    read = docker.run("run", "--rm", "--network", "none", "--entrypoint", "cat", image, MANIFEST_PATH)
    if read.returncode != 0:
        raise GpufleetError(f"image: {image}: no {MANIFEST_PATH} in the built image: {read.stderr.strip()}")
    return "sha256:" + hashlib.sha256(read.stdout.encode()).hexdigest()


def label_manifest(docker: DockerClient, built: str, tag: str, progress: Progress) -> str:
    """Put the sha256 of the manifest the build wrote on the image as a label; the digest."""
    manifest = manifest_digest(docker, built)
    log = open_log("image-label")
    folder = Path(tempfile.mkdtemp(prefix="gpufleet-label-"))
    try:
        (folder / "Dockerfile").write_text(f"FROM {built}\nLABEL {MANIFEST_LABEL}={manifest}\n")
        build = docker.argv("build", "--tag", tag, str(folder))
        run_step(f"{tag}: label", [build], log, progress, env=docker.environment())
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return manifest


def build_image(
    docker: DockerClient, context: BuildContext, progress: Progress, no_cache: bool = False
) -> LocalImage:
    """Build, then label with the manifest's digest: the image ``up`` and ``build`` deliver."""
    unlabeled = f"{context.tag}-unlabeled"
    log = docker_build(docker, context, unlabeled, progress, no_cache=no_cache)
    manifest = label_manifest(docker, unlabeled, context.tag, progress)
    docker.run("rmi", "--no-prune", unlabeled)
    info = inspect_image(docker, context.tag)
    if info is None or info.labels.get(MANIFEST_LABEL) != manifest:
        raise GpufleetError(f"image: {context.tag} is not in the daemon after docker build; see {log}")
    return LocalImage(context.tag, info.id, manifest)


def digest_of(lock: Lock) -> str:
    """The sha256 of the lock file's bytes (written canonically: the same lock, the same bytes)."""
    return lock_digest(lock_bytes(lock))


def ensure_training(
    spec: ClusterSpec, lock: Lock, base: Base, builder: BuildDaemon, progress: Progress, no_cache: bool
) -> tuple[LocalImage, BuildStep]:
    started = time.monotonic()
    problem = base_problem(lock, base.locked)
    if problem is not None:
        raise GpufleetError(f"image: the lock does not fit the base ({problem}): run `gpufleet lock`")
    context = build_context(spec, lock, base.id)
    image_id = None if no_cache else builder.image_id(context.tag, (INPUTS_LABEL, context.digest))
    if image_id is not None:
        labels = stored_labels(builder.data_root, image_id) if builder.daemon is None else {}
        if MANIFEST_LABEL not in labels:  # the daemon is running (or the files said nothing): ask it
            info = inspect_image(builder.client(), image_id)
            labels = dict(info.labels) if info else {}
        manifest = labels.get(MANIFEST_LABEL)
        if manifest:
            progress(f"image: {context.tag} cached")
            return LocalImage(context.tag, image_id, manifest, digest_of(lock)), BuildStep(
                "image", time.monotonic() - started, True
            )
    progress(f"image: building {context.tag} from the rendered image context (FROM {lock.base.pinned})")
    image = build_image(builder.client(), context, progress, no_cache=no_cache)
    seconds = time.monotonic() - started
    progress(f"image: {context.tag} built in {seconds:.1f} s")
    return replace(image, lock_digest=digest_of(lock)), BuildStep("image", seconds, False)


def ensure_image(
    spec: ClusterSpec, progress: Progress, lock: Lock | None = None, no_cache: bool = False
) -> tuple[LocalImage, list[BuildStep]]:
    """The stack's training image in the build cache, built (with its base) only if its inputs changed.

    ``lock``: the stack's lock (``gpufleet up`` and ``build`` pass it); without one, a
    machine-wide cached lock of the spec's packages (specs without a stack file).
    """
    if lock is None:
        lock = cached_lock(spec, progress)
    with machine_lock(progress):
        clean_leftovers()
        with build_daemon(progress) as builder:
            base = ensure_base(spec, builder, progress)
            image, image_step = ensure_training(spec, lock, base, builder, progress, no_cache)
    return image, [base.step, image_step]
