"""The local runtime's images, built offline and cached by content.

No image registry is reachable from a local machine, so both images are made
here, in one private build daemon whose data-root under :func:`cache_dir` IS
the image cache (shared by every stack, test and demo on the machine):

- the base: ``image.base`` when the stack sets it (it must already be in the
  cache, or pullable), else an offline CPU stand-in: Debian from the machine's
  apt mirror (debootstrap) with a venv at the production base's Python path
  (/opt/conda) holding torch (CPU, the version this Python runs) and numpy,
  imported from its root folder. Tagged by a hash of its recipe.
- the training image: built from the RENDERED Dockerfile and entrypoint.sh
  (the bytes ``gpufleet render`` writes), FROM that base. Tagged by a hash of
  those bytes and the base's image id.

Each is rebuilt only when its inputs change. :func:`load_into` copies an image
into a host's own daemon (``docker save | docker load``) unless it has it. A
machine-wide lock serialises builds and loads between concurrent callers.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from gpufleet.errors import GpufleetError
from gpufleet.hostscripts import envlock
from gpufleet.local import dockerd
from gpufleet.render.renderer import render_dockerfile, render_entrypoint
from gpufleet.spec.models import ClusterSpec

CACHE_ENV = "GPUFLEET_CACHE"
"""Overrides the cache folder."""
DEFAULT_CACHE = Path("/var/cache/gpufleet")
"""Machine-wide: the demo, tests and CI share built images."""

Progress = Callable[[str], None]

RECIPE_VERSION = 1
"""Bump when the stand-in base's build steps change: every cached base is rebuilt."""
IMAGE_RECIPE_VERSION = 1
"""Bump when the training image's build steps change."""
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
TAG_PREFIX = "gpufleet-"
"""Training images are tagged ``<image.name>:gpufleet-<12 hex>``."""
DIGEST_CHARS = 12
RECIPE_LABEL = "org.gpufleet.recipe"
INPUTS_LABEL = "org.gpufleet.inputs"
PROGRESS_EVERY_S = 10.0
PULL_TIMEOUT_S = 600.0
LOG_TAIL_LINES = 15

MACHINE_CA_DIR = Path("/usr/local/share/ca-certificates")
APT_DIR = Path("/etc/apt")
DEB822_SOURCES = APT_DIR / "sources.list.d" / "debian.sources"
ONE_LINE_SOURCES = APT_DIR / "sources.list"

_CHROOT_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
    "HOME": "/root",
}
_DOCKER_ENV = {"PATH": _CHROOT_ENV["PATH"], "LANG": "C.UTF-8"}
_TOOLS = {
    "dockerd": ("docker.io", "the build daemon"),
    "debootstrap": ("debootstrap", "the offline CPU base"),
    "chroot": ("coreutils", "the offline CPU base"),
    "tar": ("tar", "the offline CPU base"),
}


def cache_dir() -> Path:
    """The machine-wide image cache: ``$GPUFLEET_CACHE``, else /var/cache/gpufleet."""
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE)


def builder_data_root() -> Path:
    return cache_dir() / "docker" / "builder"


def logs_dir() -> Path:
    return cache_dir() / "logs"


@dataclass(frozen=True)
class LocalImage:
    tag: str  # "<image.name>:gpufleet-<12 hex>"
    id: str  # "sha256:..." image id


@dataclass(frozen=True)
class BuildStep:
    name: str  # "base", "image", "load node-0", ...
    seconds: float
    cached: bool


def uses_stand_in_base(spec: ClusterSpec) -> bool:
    """True when the stack does not set image.base: the local runtime builds its CPU stand-in."""
    return "base" not in spec.image.model_fields_set


# --- pure helpers -----------------------------------------------------------------------------


def _digest(parts: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


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
        return _digest(
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
                "ca": sorted((name, _sha(data)) for name, data in self.ca_certificates),
                "apt": sorted((name, _sha(data)) for name, data in self.apt_files),
                "changes": list(BASE_CHANGES),
            }
        )

    @property
    def tag(self) -> str:
        return base_tag(self.digest)


def base_tag(digest: str) -> str:
    return f"{BASE_REPOSITORY}:{digest[:DIGEST_CHARS]}"


def image_inputs_digest(dockerfile: bytes, entrypoint: bytes, base_id: str) -> str:
    return _digest(
        {
            "kind": "gpufleet training image",
            "version": IMAGE_RECIPE_VERSION,
            "dockerfile": _sha(dockerfile),
            "entrypoint": _sha(entrypoint),
            "base": base_id,
        }
    )


def image_tag(image_name: str, digest: str) -> str:
    """``registry.example.com/ml/chatbot-train`` -> ``...chatbot-train:gpufleet-<12 hex>``."""
    return f"{image_name}:{TAG_PREFIX}{digest[:DIGEST_CHARS]}"


def normalized_reference(ref: str) -> str:
    """A reference as Docker stores it: ``docker.io/library/`` added, ``:latest`` when untagged."""
    name, _, digest = ref.partition("@")
    last = name.rsplit("/", 1)[-1]
    if not digest and ":" not in last:
        name += ":latest"
    first, sep, _rest = name.partition("/")
    if not sep or ("." not in first and ":" not in first and first != "localhost"):
        name = ("docker.io/library/" if not sep else "docker.io/") + name
    return f"{name}@{digest}" if digest else name


def familiar_reference(ref: str) -> str:
    """The short form (``debian:latest``, ``gpufleet/cpu-base:abc``): how dockerd's files name images."""
    full = normalized_reference(ref)
    for prefix in ("docker.io/library/", "docker.io/"):
        if full.startswith(prefix):
            return full.removeprefix(prefix)
    return full


def _repository(ref: str) -> str:
    """``docker.io/library/debian:12`` -> ``docker.io/library/debian`` (the same for ``@sha256:``)."""
    name = ref.split("@", 1)[0]
    head, slash, last = name.rpartition("/")
    return head + slash + last.split(":", 1)[0]


def stored_image_id(data_root: Path, ref: str) -> str | None:
    """The image id a stopped daemon's data-root tags ``ref`` with, read from its files.

    Lets a cached build answer without starting the daemon. None when unsure:
    the caller then asks the daemon itself.
    """
    store = data_root / "image" / dockerd.STORAGE_DRIVER
    try:
        repositories = json.loads((store / "repositories.json").read_text())["Repositories"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not isinstance(repositories, dict):
        return None
    image_id = None
    for wanted in (familiar_reference(ref), normalized_reference(ref)):
        tags = repositories.get(_repository(wanted))
        image_id = tags.get(wanted) if isinstance(tags, dict) else None
        if image_id is not None:
            break
    if not isinstance(image_id, str) or not image_id.startswith("sha256:"):
        return None
    if not (store / "imagedb" / "content" / "sha256" / image_id.removeprefix("sha256:")).is_file():
        return None
    return image_id


def stored_labels(data_root: Path, image_id: str) -> dict[str, str]:
    path = data_root / "image" / dockerd.STORAGE_DRIVER / "imagedb" / "content" / "sha256"
    try:
        config = json.loads((path / image_id.removeprefix("sha256:")).read_text())
        labels = (config.get("config") or {}).get("Labels") or {}
    except (OSError, ValueError, AttributeError):
        return {}
    return {str(k): str(v) for k, v in labels.items()} if isinstance(labels, dict) else {}


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - 64 * 1024))
            text = handle.read().decode(errors="replace")
    except OSError:
        return "(no log)"
    kept = [line.rstrip() for line in text.splitlines() if line.strip()][-lines:]
    return "\n    ".join(kept) or "(empty log)"


def _last_line(path: Path) -> str:
    tail = log_tail(path, 1)
    return tail if len(tail) <= 120 else tail[:117] + "..."


# --- machine inputs ---------------------------------------------------------------------------


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


def _require(tool: str) -> None:
    if shutil.which(tool, path=_CHROOT_ENV["PATH"]) is None:
        package, what = _TOOLS[tool]
        raise GpufleetError(
            f"image: {tool} is missing ({what} needs it): install it with "
            f"`apt-get install -y {package}` (or run `make setup`)"
        )


def _require_docker() -> None:
    _require("dockerd")
    if not os.access(dockerd.DOCKER_CLI, os.X_OK):
        raise GpufleetError(
            f"image: {dockerd.DOCKER_CLI} (Debian's docker CLI, matching its dockerd) is missing: "
            "install it with `apt-get install -y docker.io` (or run `make setup`)"
        )


# --- running steps ----------------------------------------------------------------------------


def _open_log(name: str) -> Path:
    logs_dir().mkdir(parents=True, exist_ok=True)
    path = logs_dir() / f"{name}.log"
    path.write_text("")
    return path


def _kill(processes: Sequence[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        if process.poll() is None:
            process.kill()
    for process in processes:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(10)


def _run(
    step: str,
    pipeline: Sequence[Sequence[str]],
    log: Path,
    progress: Progress,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float | None = None,
) -> None:
    """Run ``a | b | ...`` with every stderr (and the last stdout) in ``log``; progress every ~10 s.

    A failure raises GpufleetError naming the step, with the log's last lines.
    """
    started = time.monotonic()
    processes: list[subprocess.Popen[bytes]] = []
    with open(log, "ab") as out:
        out.write(("$ " + " | ".join(" ".join(argv) for argv in pipeline) + "\n").encode())
        out.flush()
        try:
            upstream: IO[bytes] | None = None
            for index, argv in enumerate(pipeline):
                last = index == len(pipeline) - 1
                try:
                    process = subprocess.Popen(
                        list(argv),
                        stdin=upstream if upstream is not None else subprocess.DEVNULL,
                        stdout=out if last else subprocess.PIPE,
                        stderr=out,
                        env=dict(env) if env is not None else None,
                        cwd=cwd,
                    )
                except OSError as error:
                    raise GpufleetError(f"image: {step}: cannot run {argv[0]}: {error}") from None
                if upstream is not None:
                    upstream.close()  # the next process owns it now
                upstream = process.stdout
                processes.append(process)
            while True:
                try:
                    processes[-1].wait(PROGRESS_EVERY_S)
                    break
                except subprocess.TimeoutExpired:
                    out.flush()
                    if timeout is not None and time.monotonic() - started > timeout:
                        _kill(processes)
                        out.write(f"gpufleet: stopped after {timeout:.0f} s\n".encode())
                        break
                    progress(f"image: {step}: {time.monotonic() - started:.0f} s ... {_last_line(log)}")
            for process in processes:
                process.wait()
        finally:
            _kill(processes)
    failed = [(argv[0], p.returncode) for argv, p in zip(pipeline, processes, strict=True) if p.returncode]
    if failed:
        tool, code = failed[-1]
        raise GpufleetError(
            f"image: {step} failed ({Path(tool).name} exited {code}); the last lines of its log ({log}):\n    "
            + log_tail(log)
        )


def _remove_tree(path: Path) -> None:
    """Unmount anything below (debootstrap may leave /proc and /sys mounted), then delete."""
    if not path.exists():
        return
    dockerd.unmount_below(path)
    subprocess.run(["rm", "-rf", "--one-file-system", str(path)], capture_output=True, check=False)


@contextlib.contextmanager
def _machine_lock(progress: Progress) -> Iterator[None]:
    """One build or load at a time on this machine (cache_dir()/lock)."""
    cache = cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    fd = os.open(cache / "lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            progress(f"image: waiting for another gpufleet build or load on this machine ({cache / 'lock'})")
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


@dataclass
class _Builder:
    """The build daemon, started on first use and stopped on exit."""

    progress: Progress
    daemon: dockerd.Daemon | None = None
    run_dir: Path | None = None
    started_s: float = field(default=0.0)

    @property
    def data_root(self) -> Path:
        return builder_data_root()

    def get(self) -> dockerd.Daemon:
        if self.daemon is None:
            _require_docker()
            began = time.monotonic()
            _stop_stale_builder(self.data_root)
            self.run_dir = Path(tempfile.mkdtemp(prefix="gpufleet-builder-"))
            paths = dockerd.DaemonPaths(data_root=self.data_root, run_dir=self.run_dir)
            daemon = dockerd.start(paths)
            self.daemon = daemon
            _builder_pidfile().write_text(f"{daemon.pid}\n")
            dockerd.wait_ready(daemon, "image: the build daemon")
            self.started_s = time.monotonic() - began
            self.progress(f"image: build daemon started in {self.started_s:.1f} s")
        return self.daemon

    def stop(self) -> None:
        if self.daemon is not None:
            dockerd.stop(self.daemon.pid, self.daemon.paths)
            dockerd.unmount_below(self.data_root)
            if not dockerd.exited(self.daemon):
                self.progress(f"image: the build daemon (pid {self.daemon.pid}) did not stop")
            self.daemon = None
            _builder_pidfile().unlink(missing_ok=True)
        if self.run_dir is not None:
            shutil.rmtree(self.run_dir, ignore_errors=True)
            self.run_dir = None

    def image_id(self, ref: str, label: tuple[str, str] | None = None) -> str | None:
        """The id of ``ref`` in the cache (with ``label`` set, when given); from its files if possible."""
        if self.daemon is None:
            found = stored_image_id(self.data_root, ref)
            if found is not None and (
                label is None or stored_labels(self.data_root, found).get(label[0]) == label[1]
            ):
                return found
            if not self.data_root.exists():
                return None
        return daemon_image_id(self.get(), ref, label)


def _builder_pidfile() -> Path:
    return cache_dir() / "builder.pid"


def _stop_stale_builder(data_root: Path) -> None:
    """The build daemon of a caller that was killed (we hold the lock: it is nobody's now)."""
    try:
        pid = int(_builder_pidfile().read_text().strip())
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError):
        return
    if Path(argv[0].decode(errors="replace")).name == dockerd.DOCKERD and (
        f"--data-root={data_root}".encode() in argv
    ):
        dockerd.stop(pid)
        dockerd.unmount_below(data_root)
    _builder_pidfile().unlink(missing_ok=True)


@contextlib.contextmanager
def _builder(progress: Progress) -> Iterator[_Builder]:
    builder = _Builder(progress)
    try:
        yield builder
    finally:
        builder.stop()


def daemon_image_id(daemon: dockerd.Daemon, ref: str, label: tuple[str, str] | None = None) -> str | None:
    probe = dockerd.docker_cli(daemon, "image", "inspect", "--format", "{{.Id}} {{json .Config.Labels}}", ref)
    if probe.returncode != 0:
        return None
    image_id, _, labels_json = probe.stdout.strip().partition(" ")
    if label is not None:
        try:
            labels = json.loads(labels_json) or {}
        except ValueError:
            labels = {}
        if labels.get(label[0]) != label[1]:
            return None
    return image_id or None


def _docker_env(buildkit: bool) -> dict[str, str]:
    return {**_DOCKER_ENV, "DOCKER_BUILDKIT": "1" if buildkit else "0", "HOME": "/root"}


# --- the base ---------------------------------------------------------------------------------


def _build_stand_in(recipe: BaseRecipe, builder: _Builder, progress: Progress) -> str:
    """debootstrap + venv + torch/numpy + CA certificates + apt sources -> docker import. Its id."""
    for tool in ("debootstrap", "chroot", "tar"):
        _require(tool)
    tag = recipe.tag
    log = _open_log("base")
    work = cache_dir() / "tmp"
    work.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="rootfs-", dir=work))
    try:
        progress(f"image: base {tag}: debootstrap {recipe.suite} from {recipe.mirror} (about 90 s)")
        _run(
            "base: debootstrap",
            [
                [
                    "debootstrap",
                    "--variant=minbase",
                    f"--include={','.join(recipe.packages)}",
                    recipe.suite,
                    str(root),
                    recipe.mirror,
                ]
            ],
            log,
            progress,
        )
        dockerd.unmount_below(root)
        in_root = ["chroot", str(root)]
        progress(f"image: base {tag}: venv at {VENV} with torch {recipe.torch} and numpy {recipe.numpy}")
        _run("base: venv", [[*in_root, "python3", "-m", "venv", VENV]], log, progress, env=_CHROOT_ENV)
        wheels = root / "tmp" / "wheels"
        wheels.mkdir(parents=True, exist_ok=True)
        pins = [f"torch=={recipe.torch}", f"numpy=={recipe.numpy}"]
        _run(
            "base: pip download",
            [
                [
                    sys.executable,
                    "-m",
                    "pip",
                    "download",
                    "--disable-pip-version-check",
                    "--python-version",
                    BASE_PYTHON_VERSION,
                    "--only-binary=:all:",
                    "--dest",
                    str(wheels),
                    *pins,
                ]
            ],
            log,
            progress,  # the machine's environment and pip config: they find the local CPU wheel
        )
        _run(
            "base: pip install",
            [
                [
                    *in_root,
                    f"{VENV}/bin/pip",
                    "install",
                    "--disable-pip-version-check",
                    "--no-cache-dir",
                    "--no-index",
                    "--find-links",
                    "/tmp/wheels",
                    *pins,
                ]
            ],
            log,
            progress,
            env=_CHROOT_ENV,
        )
        shutil.rmtree(wheels)
        ca_dir = root / MACHINE_CA_DIR.relative_to("/")
        ca_dir.mkdir(parents=True, exist_ok=True)
        for name, data in recipe.ca_certificates:
            (ca_dir / name).write_bytes(data)
        _run(
            "base: update-ca-certificates",
            [[*in_root, "update-ca-certificates"]],
            log,
            progress,
            env=_CHROOT_ENV,
        )
        _install_apt_files(root, recipe.apt_files)
        for leftover in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for path in (root / leftover).glob("*"):
                if path.is_file():
                    path.unlink()
        _run(
            "base: check",
            [
                [
                    *in_root,
                    f"{VENV}/bin/python",
                    "-c",
                    "import torch, numpy; print('torch', torch.__version__)",
                ]
            ],
            log,
            progress,
            env=_CHROOT_ENV,
        )
        progress(f"image: base {tag}: importing the root folder")
        daemon = builder.get()
        changes = [
            arg
            for change in (*BASE_CHANGES, f"LABEL {RECIPE_LABEL}={recipe.digest}")
            for arg in ("--change", change)
        ]
        _run(
            "base: docker import",
            [
                ["tar", "--numeric-owner", "-C", str(root), "-c", "."],
                daemon.docker("import", *changes, "-", tag),
            ],
            log,
            progress,
            env=_docker_env(buildkit=False),
        )
    finally:
        _remove_tree(root)
    image_id = daemon_image_id(builder.get(), tag, (RECIPE_LABEL, recipe.digest))
    if image_id is None:
        raise GpufleetError(f"image: base: {tag} is not in the build daemon after docker import; see {log}")
    return image_id


def _install_apt_files(root: Path, files: Sequence[tuple[str, bytes]]) -> None:
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


def _ensure_base(spec: ClusterSpec, builder: _Builder, progress: Progress) -> tuple[str, str, BuildStep]:
    """(tag, id, step) of the effective base."""
    started = time.monotonic()
    if not uses_stand_in_base(spec):
        return _given_base(spec.image.base, builder, progress, started)
    recipe = machine_recipe()
    tag = recipe.tag
    image_id = builder.image_id(tag, (RECIPE_LABEL, recipe.digest))
    if image_id is not None:
        progress(f"image: base {tag} cached")
        return tag, image_id, BuildStep("base", time.monotonic() - started, True)
    image_id = _build_stand_in(recipe, builder, progress)
    seconds = time.monotonic() - started
    progress(f"image: base {tag} built in {seconds:.1f} s")
    return tag, image_id, BuildStep("base", seconds, False)


def _given_base(
    base: str, builder: _Builder, progress: Progress, started: float
) -> tuple[str, str, BuildStep]:
    image_id = builder.image_id(base)
    if image_id is not None:
        progress(f"image: base {base} cached")
        return base, image_id, BuildStep("base", time.monotonic() - started, True)
    progress(f"image: base {base}: not in the image cache; trying docker pull")
    log = _open_log("base-pull")
    try:
        pull = [builder.get().docker("pull", base)]
        _run("base: docker pull", pull, log, progress, env=_docker_env(False), timeout=PULL_TIMEOUT_S)
    except GpufleetError:
        data_root = builder_data_root()
        raise GpufleetError(
            f"image: image.base {base!r} is not in the local image cache ({data_root}) and cannot be "
            f"pulled (no registry reachable; log: {log}): leave image.base unset in a local stack to use "
            "the offline CPU stand-in base, or load it into the cache: `docker save` it where it exists, "
            f"then here `dockerd --data-root {data_root} --exec-root /tmp/gpufleet-cache-exec "
            "--pidfile /tmp/gpufleet-cache.pid --host unix:///tmp/gpufleet-cache.sock --bridge=none "
            "--iptables=false --ip6tables=false --ip-forward=false &`, "
            "`/usr/bin/docker -H unix:///tmp/gpufleet-cache.sock load -i BASE.tar`, and stop that dockerd"
        ) from None
    image_id = daemon_image_id(builder.get(), base)
    if image_id is None:
        raise GpufleetError(
            f"image: image.base {base!r} was pulled but is not in the build daemon; see {log}"
        )
    seconds = time.monotonic() - started
    progress(f"image: base {base} pulled in {seconds:.1f} s")
    return base, image_id, BuildStep("base", seconds, False)


# --- the training image -----------------------------------------------------------------------


@dataclass(frozen=True)
class BuildContext:
    dockerfile: bytes
    entrypoint: bytes
    digest: str  # of the inputs: Dockerfile, entrypoint, base image id
    tag: str


def build_context(spec: ClusterSpec, base: str, base_id: str) -> BuildContext:
    """The rendered Dockerfile and entrypoint for ``FROM base``, and the image's content tag."""
    rendered = spec.model_copy(update={"image": spec.image.model_copy(update={"base": base})})
    dockerfile = render_dockerfile(rendered).encode()
    entrypoint = render_entrypoint(rendered).encode()
    digest = image_inputs_digest(dockerfile, entrypoint, base_id)
    return BuildContext(dockerfile, entrypoint, digest, image_tag(spec.image.name, digest))


def write_context(context: BuildContext, folder: Path) -> None:
    """The files as ``gpufleet render`` writes them (the entrypoint 0644: the Dockerfile sets its mode)."""
    (folder / "Dockerfile").write_bytes(context.dockerfile)
    entrypoint = folder / "entrypoint.sh"
    entrypoint.write_bytes(context.entrypoint)
    entrypoint.chmod(0o644)


def docker_build(
    daemon: dockerd.Daemon,
    context: BuildContext,
    tag: str,
    progress: Progress,
    buildkit: bool = True,
    log_name: str | None = None,
) -> Path:
    """``docker build --network host`` of the context into ``daemon``; the log's path."""
    log = _open_log(log_name or f"image-{context.digest[:DIGEST_CHARS]}")
    folder = Path(tempfile.mkdtemp(prefix="gpufleet-context-"))
    try:
        write_context(context, folder)
        argv = ["build", "--network", "host", "--label", f"{INPUTS_LABEL}={context.digest}", "--tag", tag]
        argv += ["--progress", "plain"] if buildkit else ["--force-rm"]
        _run(
            f"{tag}: docker build" + ("" if buildkit else " (classic builder)"),
            [daemon.docker(*argv, str(folder))],
            log,
            progress,
            env=_docker_env(buildkit),
        )
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return log


def _ensure_training(
    spec: ClusterSpec, base: str, base_id: str, builder: _Builder, progress: Progress
) -> tuple[LocalImage, BuildStep]:
    started = time.monotonic()
    context = build_context(spec, base, base_id)
    label = (INPUTS_LABEL, context.digest)
    image_id = builder.image_id(context.tag, label)
    if image_id is not None:
        progress(f"image: {context.tag} cached")
        return LocalImage(context.tag, image_id), BuildStep("image", time.monotonic() - started, True)
    progress(f"image: building {context.tag} from the rendered Dockerfile (FROM {base})")
    daemon = builder.get()
    log = docker_build(daemon, context, context.tag, progress)
    image_id = daemon_image_id(daemon, context.tag, label)
    if image_id is None:
        raise GpufleetError(f"image: {context.tag} is not in the build daemon after docker build; see {log}")
    seconds = time.monotonic() - started
    progress(f"image: {context.tag} built in {seconds:.1f} s")
    return LocalImage(context.tag, image_id), BuildStep("image", seconds, False)


# --- the API ----------------------------------------------------------------------------------


def ensure_image(spec: ClusterSpec, progress: Progress) -> tuple[LocalImage, list[BuildStep]]:
    """The stack's training image in the build cache, built (with its base) only if its inputs changed."""
    with _machine_lock(progress):
        _clean_leftovers()
        with _builder(progress) as builder:
            base, base_id, base_step = _ensure_base(spec, builder, progress)
            image, image_step = _ensure_training(spec, base, base_id, builder, progress)
    return image, [base_step, image_step]


def load_into(image: LocalImage, target: dockerd.Daemon, host: str, progress: Progress) -> BuildStep:
    """``image`` into a host's daemon (``docker save | docker load`` from the cache) unless it has it."""
    started = time.monotonic()
    name = f"load {host}"
    if daemon_image_id(target, image.id) == image.id:
        if daemon_image_id(target, image.tag) != image.id:
            tagged = dockerd.docker_cli(target, "tag", image.id, image.tag)
            if tagged.returncode != 0:
                raise GpufleetError(f"image: {host}: docker tag {image.tag} failed: {tagged.stderr.strip()}")
        progress(f"image: {host} already has {image.tag}")
        return BuildStep(name, time.monotonic() - started, True)
    with _machine_lock(progress), _builder(progress) as builder:
        if builder.image_id(image.tag) != image.id:
            raise GpufleetError(
                f"image: {image.tag} ({image.id}) is no longer in the image cache ({builder_data_root()}): "
                "build it again (gpufleet up builds it)"
            )
        progress(f"image: loading {image.tag} into {host} (about 30 s)")
        log = _open_log(f"load-{re.sub(r'[^A-Za-z0-9_.-]', '_', host)}")
        _run(
            f"{name}: docker save | docker load",
            [builder.get().docker("save", image.tag), target.docker("load")],
            log,
            progress,
            env=_docker_env(False),
        )
    if daemon_image_id(target, image.tag) != image.id:
        raise GpufleetError(
            f"image: {host}: {image.tag} is not in the host's daemon after docker load; see {log}"
        )
    seconds = time.monotonic() - started
    progress(f"image: loaded into {host} in {seconds:.1f} s")
    return BuildStep(name, seconds, False)


def _clean_leftovers() -> None:
    """Root folders of a build that was killed (only under the lock: nobody else builds now)."""
    work = cache_dir() / "tmp"
    if work.is_dir():
        for path in work.iterdir():
            _remove_tree(path)
