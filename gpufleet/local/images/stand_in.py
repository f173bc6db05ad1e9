"""The offline CPU stand-in base, for local stacks that do not set image.base.

Debian from the machine's apt mirror (debootstrap), with a venv at the
production base's Python path (/opt/conda) holding torch (CPU, the version
this Python runs) and numpy, imported from its root folder. Tagged by a hash
of its recipe, and by a stable name (:attr:`BaseRecipe.stable_name`) that
locks and Dockerfiles use.
"""

from __future__ import annotations

import importlib.metadata
import re
import shutil
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpufleet.errors import GpufleetError
from gpufleet.hostscripts import envlock
from gpufleet.local import dockerd
from gpufleet.local.images.builder import BuildDaemon, daemon_image_id, docker_env
from gpufleet.local.images.cache import DIGEST_CHARS, cache_dir, inputs_digest, remove_tree, sha256_hex
from gpufleet.local.images.steps import CHROOT_ENV, Progress, open_log, require_tool, run_step

RECIPE_VERSION = 1
"""Bump when the stand-in base's build steps change: every cached base is rebuilt."""

SUITE = "bookworm"

BASE_PACKAGES = ("ca-certificates", "python3", "python3-venv")

FALLBACK_MIRROR = "http://deb.debian.org/debian"

BASE_REPOSITORY = "gpufleet/cpu-base"

VENV = "/opt/conda"
"""The stand-in's Python lives where the production base (pytorch/pytorch) keeps its own."""

NUMPY_VERSION = "2.4.6"
"""numpy for the stand-in when this Python has none (torch does not require it)."""

BASE_PYTHON_VERSION = "3.11"
"""Debian bookworm's python3: the wheels are downloaded for it."""

CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"

IMAGE_PATH = f"{VENV}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

BASE_CHANGES = (
    f"ENV PATH={IMAGE_PATH}",
    f"ENV PIP_CERT={CA_BUNDLE}",
    f"ENV REQUESTS_CA_BUNDLE={CA_BUNDLE}",
    f"ENV SSL_CERT_FILE={CA_BUNDLE}",
    "WORKDIR /workspace",
)

RECIPE_LABEL = "org.gpufleet.recipe"

MACHINE_CA_DIR = Path("/usr/local/share/ca-certificates")

APT_DIR = Path("/etc/apt")

DEB822_SOURCES = APT_DIR / "sources.list.d" / "debian.sources"

ONE_LINE_SOURCES = APT_DIR / "sources.list"


def mirror_from_deb822(text: str, suite: str = SUITE) -> str | None:
    """The first ``URIs`` of an enabled deb822 stanza of Types deb that lists ``suite`` itself."""
    return _first_uri(envlock.parse_deb822_sources(text), suite)


def mirror_from_sources_list(text: str, suite: str = SUITE) -> str | None:
    """The URI of the first ``deb [options] URI suite ...`` line for ``suite``."""
    return _first_uri(envlock.parse_one_line_sources(text), suite)


def _first_uri(sources: list[dict[str, Any]], suite: str) -> str | None:
    """One parser of apt sources for the machine's mirror and for the lock's snapshot (envlock.py)."""
    return next((str(s["uri"]).rstrip("/") for s in sources if s["suite"] == suite), None)


def apt_mirror(deb822: str | None, sources_list: str | None) -> str:
    """The machine's Debian mirror (deb822 first, then sources.list), else deb.debian.org."""
    if deb822:
        found = mirror_from_deb822(deb822)
        if found:
            return found
    if sources_list:
        found = mirror_from_sources_list(sources_list)
        if found:
            return found
    return FALLBACK_MIRROR


@dataclass(frozen=True)
class BaseRecipe:
    """Everything the stand-in base is made of; its hash names the image."""

    mirror: str
    torch: str
    numpy: str
    ca_certificates: tuple[tuple[str, bytes], ...] = ()  # (file name, bytes), sorted
    apt_files: tuple[tuple[str, bytes], ...] = ()  # (path under /etc/apt, bytes), sorted
    suite: str = SUITE
    packages: tuple[str, ...] = BASE_PACKAGES
    version: int = RECIPE_VERSION

    @property
    def digest(self) -> str:
        return inputs_digest(
            {
                "kind": "gpufleet cpu base",
                "version": self.version,
                "suite": self.suite,
                "mirror": self.mirror,
                "packages": sorted(self.packages),
                "venv": VENV,
                "python": BASE_PYTHON_VERSION,
                "torch": self.torch,
                "numpy": self.numpy,
                "ca": sorted((name, sha256_hex(data)) for name, data in self.ca_certificates),
                "apt": sorted((name, sha256_hex(data)) for name, data in self.apt_files),
                "changes": list(BASE_CHANGES),
            }
        )

    @property
    def tag(self) -> str:
        return base_tag(self.digest)

    @property
    def stable_name(self) -> str:
        """What locks and Dockerfiles call it: its contents that matter, not this machine's mirror."""
        tag = f"py{BASE_PYTHON_VERSION}-torch{self.torch}-numpy{self.numpy}-r{self.version}"
        return f"{BASE_REPOSITORY}:{re.sub(r'[^A-Za-z0-9_.-]', '_', tag)}"  # 2.13.0+cpu: no '+' in tags


def base_tag(digest: str) -> str:
    return f"{BASE_REPOSITORY}:{digest[:DIGEST_CHARS]}"


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def machine_mirror() -> str:
    return apt_mirror(_read(DEB822_SOURCES), _read(ONE_LINE_SOURCES))


def _machine_ca_certificates() -> tuple[tuple[str, bytes], ...]:
    return tuple((path.name, path.read_bytes()) for path in sorted(MACHINE_CA_DIR.glob("*.crt")))


def _machine_apt_files() -> tuple[tuple[str, bytes], ...]:
    """The machine's apt sources (enabled ones) and its Acquire settings, as paths under /etc/apt."""
    files: list[Path] = []
    if ONE_LINE_SOURCES.is_file():
        files.append(ONE_LINE_SOURCES)
    files += sorted(p for p in (APT_DIR / "sources.list.d").glob("*") if p.suffix in (".list", ".sources"))
    files += sorted(
        p for p in (APT_DIR / "apt.conf.d").glob("*") if p.is_file() and "Acquire::" in (_read(p) or "")
    )
    return tuple((str(p.relative_to(APT_DIR)), p.read_bytes()) for p in files if p.is_file())


def _installed_version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine_recipe() -> BaseRecipe:
    torch = _installed_version("torch")
    if torch is None:
        raise GpufleetError(
            "image: torch is not installed in this Python, so the CPU base has no torch version to "
            "match: run `make setup` (it installs torch into the project's venv)"
        )
    return BaseRecipe(
        mirror=machine_mirror(),
        torch=torch,
        numpy=_installed_version("numpy") or NUMPY_VERSION,
        ca_certificates=_machine_ca_certificates(),
        apt_files=_machine_apt_files(),
    )


@dataclass(frozen=True)
class _RootFolder:
    """The stand-in's root folder while it is built, and where its steps log."""

    recipe: BaseRecipe
    path: Path
    log: Path
    progress: Progress

    def run(self, step: str, argv: Sequence[str], in_root: bool = True) -> None:
        command = ["chroot", str(self.path), *argv] if in_root else list(argv)
        run_step(f"base: {step}", [command], self.log, self.progress, env=CHROOT_ENV if in_root else None)


def build_stand_in(recipe: BaseRecipe, builder: BuildDaemon, progress: Progress) -> str:
    """debootstrap + venv + torch/numpy + CA certificates + apt sources -> docker import. Its id."""
    for tool in ("debootstrap", "chroot", "tar"):
        require_tool(tool)
    work = cache_dir() / "tmp"
    work.mkdir(parents=True, exist_ok=True)
    root = _RootFolder(recipe, Path(tempfile.mkdtemp(prefix="rootfs-", dir=work)), open_log("base"), progress)
    try:
        _debootstrap(root)
        _install_torch(root)
        _trust_machine_sources(root)
        root.run(
            "check", [f"{VENV}/bin/python", "-c", "import torch, numpy; print('torch', torch.__version__)"]
        )
        _import(root, builder)
    finally:
        remove_tree(root.path)
    image_id = daemon_image_id(builder.get(), recipe.tag, (RECIPE_LABEL, recipe.digest))
    if image_id is None:
        raise GpufleetError(
            f"image: base: {recipe.tag} is not in the build daemon after docker import; see {root.log}"
        )
    return image_id


def _debootstrap(root: _RootFolder) -> None:
    recipe = root.recipe
    root.progress(f"image: base {recipe.tag}: debootstrap {recipe.suite} from {recipe.mirror} (about 90 s)")
    include = f"--include={','.join(recipe.packages)}"
    argv = ["debootstrap", "--variant=minbase", include, recipe.suite, str(root.path), recipe.mirror]
    root.run("debootstrap", argv, in_root=False)
    dockerd.unmount_below(root.path)


def _install_torch(root: _RootFolder) -> None:
    """A venv at the production base's path with this Python's torch and numpy, from local wheels."""
    recipe = root.recipe
    root.progress(
        f"image: base {recipe.tag}: venv at {VENV} with torch {recipe.torch} and numpy {recipe.numpy}"
    )
    root.run("venv", ["python3", "-m", "venv", VENV])
    wheels = root.path / "tmp" / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    pins = [f"torch=={recipe.torch}", f"numpy=={recipe.numpy}"]
    # The machine's environment and pip config: they find the local CPU wheel.
    download = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check"]
    download += ["--python-version", BASE_PYTHON_VERSION, "--only-binary=:all:", "--dest", str(wheels), *pins]
    root.run("pip download", download, in_root=False)
    install = [f"{VENV}/bin/pip", "install", "--disable-pip-version-check", "--no-cache-dir", "--no-index"]
    root.run("pip install", [*install, "--find-links", "/tmp/wheels", *pins])
    shutil.rmtree(wheels)


def _trust_machine_sources(root: _RootFolder) -> None:
    """The machine's CA certificates and apt sources: apt and pip inside later builds reach the same mirrors."""
    ca_dir = root.path / MACHINE_CA_DIR.relative_to("/")
    ca_dir.mkdir(parents=True, exist_ok=True)
    for name, data in root.recipe.ca_certificates:
        (ca_dir / name).write_bytes(data)
    root.run("update-ca-certificates", ["update-ca-certificates"])
    install_apt_files(root.path, root.recipe.apt_files)
    for leftover in ("var/cache/apt/archives", "var/lib/apt/lists"):
        for path in (root.path / leftover).glob("*"):
            if path.is_file():
                path.unlink()


def _import(root: _RootFolder, builder: BuildDaemon) -> None:
    recipe = root.recipe
    root.progress(f"image: base {recipe.tag}: importing the root folder")
    labels = (*BASE_CHANGES, f"LABEL {RECIPE_LABEL}={recipe.digest}")
    changes = [arg for change in labels for arg in ("--change", change)]
    run_step(
        "base: docker import",
        [
            ["tar", "--numeric-owner", "-C", str(root.path), "-c", "."],
            builder.get().docker("import", *changes, "-", recipe.tag),
        ],
        root.log,
        root.progress,
        env=docker_env(buildkit=False),
    )


def install_apt_files(root: Path, files: Sequence[tuple[str, bytes]]) -> None:
    """The machine's apt sources replace debootstrap's, so apt inside later builds uses the same mirror."""
    etc_apt = root / APT_DIR.relative_to("/")
    if any(name.startswith("sources.list") for name, _ in files):
        (etc_apt / "sources.list").unlink(missing_ok=True)
    for name, data in files:
        target = etc_apt / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        for keyring in re.findall(rb"(?:Signed-By:|signed-by=)\s*(/[^\s\]]+)", data):
            source = Path(keyring.decode())
            copy = root / source.relative_to("/")
            if source.is_file() and not copy.exists():
                copy.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source, copy)
