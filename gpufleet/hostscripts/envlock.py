"""Resolve the image's packages INSIDE its base (standard library only; runs as ``python - REQUEST``).

The base's Python and platform decide which wheels, hashes and apt versions
apply, so ``gpufleet lock`` runs this in a throwaway container of the base:

- Python: pip-tools' ``pip-compile --generate-hashes`` (installed into a
  scratch folder, never into the base), constrained by what the base already
  ships (``pip list --format=freeze``), so a lock never replaces the base's
  torch or numpy; the previous lock's pins are fed back so a re-lock moves
  nothing it need not;
- apt: ``apt-get install -s`` (a simulation) of the packages, every package it
  would unpack at its exact version; for a production base from the archive's
  snapshot service at one timestamp, so a rebuild months later finds them.

The request is a JSON object (see :func:`main`); the answer is one line
``GPUFLEET-LOCK <json>`` on stdout: the pins, or ``{"error": ...}``.
"""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ANSWER_PREFIX = "GPUFLEET-LOCK "
PIP_TOOLS = "pip-tools[stable]==7.7.0"  # [stable]: the pip versions it is tested with
SNAPSHOT_URLS = {
    "debian": "https://snapshot.debian.org/archive/debian/{ts}",
    "debian-security": "https://snapshot.debian.org/archive/debian-security/{ts}",
    "ubuntu": "https://snapshot.ubuntu.com/ubuntu/{ts}",
}
_INST_RE = re.compile(r"^Inst (?P<name>\S+) (?:\[[^\]]*\] )?\((?P<version>\S+) (?P<rest>[^)]*)\)")
_NOT_FOUND_RE = re.compile(
    r"(?:Could not find a version that satisfies the requirement|No matching distribution found for) (\S+)"
)


# --- apt sources ------------------------------------------------------------------------------


def parse_one_line_sources(text: str) -> list[dict[str, Any]]:
    """``deb [opts] URI suite comps...`` lines as {"options", "uri", "suite", "components"}."""
    sources = []
    for line in text.splitlines():
        words = line.split("#", 1)[0].split()
        if len(words) < 3 or words[0] != "deb":
            continue
        options = ""
        rest = words[1:]
        if rest[0].startswith("["):
            taken = []
            while rest and not rest[0].endswith("]"):
                taken.append(rest.pop(0))
            if rest:
                taken.append(rest.pop(0))
            options = " ".join(taken).strip("[]").strip()
        if len(rest) >= 2:
            sources.append({"options": options, "uri": rest[0], "suite": rest[1], "components": rest[2:]})
    return sources


def parse_deb822_sources(text: str) -> list[dict[str, Any]]:
    """Stanzas of Types: deb as the same records (one per URI and suite)."""
    sources = []
    for stanza in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        key = None
        for line in stanza.splitlines():
            if line.startswith("#") or not line.strip():
                continue
            if line[0].isspace() and key:
                continue  # a continuation (an inline key)
            key, sep, value = line.partition(":")
            key = key.strip().lower()
            if sep:
                fields[key] = value.strip()
        if fields.get("enabled", "yes").lower() == "no" or "deb" not in fields.get("types", "").split():
            continue
        options = f"signed-by={fields['signed-by']}" if fields.get("signed-by", "").startswith("/") else ""
        for uri in fields.get("uris", "").split():
            for suite in fields.get("suites", "").split():
                components = fields.get("components", "").split()
                sources.append({"options": options, "uri": uri, "suite": suite, "components": components})
    return sources


def archive_of(uri: str) -> str | None:
    """The snapshot service that keeps ``uri``'s archive: debian, debian-security, ubuntu, or None (a vendor's)."""
    path = uri.rstrip("/")
    if re.search(r"//[^/]*(debian\.org|debian\.net)/debian-security$", path) or path.endswith(
        "/debian-security"
    ):
        return "debian-security"
    if re.search(r"//[^/]*debian\.(org|net)/debian$", path):
        return "debian"
    if re.search(r"//([a-z0-9-]+\.)*(archive|security)\.ubuntu\.com/ubuntu$", path):
        return "ubuntu"
    return None


def snapshot_sources(sources: list[dict[str, Any]], timestamp: str) -> tuple[list[str], str | None]:
    """One-line sources with Debian/Ubuntu archives moved to their snapshot at ``timestamp``.

    Vendor repositories (NVIDIA's CUDA one) are not in any snapshot service: kept
    as they are, their packages pinned by version only. Returns (lines, archive).
    """
    lines = []
    archives = set()
    for source in sources:
        archive = archive_of(source["uri"])
        options = [source["options"]] if source["options"] else []
        uri = source["uri"]
        if archive is not None:
            archives.add(archive.split("-")[0])
            uri = SNAPSHOT_URLS[archive].format(ts=timestamp) + "/"
            options.append("check-valid-until=no")
        opts = f"[{' '.join(options)}] " if options else ""
        lines.append(f"deb {opts}{uri} {source['suite']} {' '.join(source['components'])}".rstrip())
    return lines, (sorted(archives)[0] if archives else None)


def base_sources() -> list[dict[str, Any]]:
    sources: list[dict[str, Any]] = []
    one_line = Path("/etc/apt/sources.list")
    if one_line.is_file():
        sources += parse_one_line_sources(one_line.read_text())
    for path in sorted(Path("/etc/apt/sources.list.d").glob("*")):
        if path.suffix == ".list":
            sources += parse_one_line_sources(path.read_text())
        elif path.suffix == ".sources":
            sources += parse_deb822_sources(path.read_text())
    return sources


def use_only_sources(lines: list[str], folder: Path) -> list[str]:
    """apt options that read ``lines`` and nothing of the base's own lists."""
    listing = folder / "sources.list"
    listing.write_text("\n".join(lines) + "\n")
    parts = folder / "sources.list.d"
    parts.mkdir(exist_ok=True)
    return ["-o", f"Dir::Etc::SourceList={listing}", "-o", f"Dir::Etc::SourceParts={parts}"]


# --- apt resolution -----------------------------------------------------------------------------


def parse_simulation(text: str) -> list[dict[str, str]]:
    """``apt-get install -s`` output -> [{"name", "version"}] of every package it would unpack, sorted."""
    native = None
    pins = {}
    for line in text.splitlines():
        match = _INST_RE.match(line)
        if not match:
            continue
        name = match["name"]
        arch = match["rest"].rsplit("[", 1)[-1].rstrip("]") if "[" in match["rest"] else None
        if native is None:
            native = _native_arch()
        if arch and arch not in (native, "all") and ":" not in name:
            name = f"{name}:{arch}"
        pins[name] = match["version"]
    return [{"name": name, "version": pins[name]} for name in sorted(pins)]


def _native_arch() -> str:
    try:
        return subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return ""


def resolve_apt(packages: list[str], snapshot: str | None, scratch: Path) -> dict[str, Any]:
    options: list[str] = []
    lines: list[str] = []
    archive = None
    if snapshot:
        lines, archive = snapshot_sources(base_sources(), snapshot)
        options = [*use_only_sources(lines, scratch), "-o", "Acquire::Check-Valid-Until=false"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    update = subprocess.run(["apt-get", *options, "update", "-qq"], capture_output=True, text=True, env=env)
    if update.returncode != 0:
        raise LockFailure("apt", "apt-get update failed: " + _last_lines(update.stderr))
    simulation = subprocess.run(
        ["apt-get", *options, "install", "-s", "-y", "--no-install-recommends", *packages],
        capture_output=True,
        text=True,
        env=env,
    )
    if simulation.returncode != 0:
        raise LockFailure("apt", _last_lines(simulation.stderr or simulation.stdout))
    return {
        "archive": archive,
        "snapshot": snapshot,
        "sources": lines,
        "packages": parse_simulation(simulation.stdout),
    }


# --- Python resolution --------------------------------------------------------------------------


class LockFailure(Exception):
    def __init__(self, stage: str, message: str) -> None:
        super().__init__(message)
        self.stage = stage
        self.message = message


def _last_lines(text: str, count: int = 2) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    wanted = [line for line in lines if line.startswith(("E:", "ERROR", "error"))] or lines
    return " / ".join(wanted[-count:]) or "no output"


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def base_freeze() -> dict[str, str]:
    """What the base's Python already has: canonical name -> version."""
    listing = subprocess.run(
        [sys.executable, "-m", "pip", "list", "--format=freeze", "--disable-pip-version-check"],
        capture_output=True,
        text=True,
    )
    found = {}
    for line in listing.stdout.splitlines():
        name, sep, version = line.partition("==")
        if sep:
            found[canonical(name)] = version.strip()
    return found


def parse_compiled(text: str) -> list[dict[str, Any]]:
    """pip-compile's ``--generate-hashes --no-annotate`` output -> [{"name", "version", "hashes"}]."""
    joined = re.sub(r"\\\n", " ", text)
    pins = []
    for line in joined.splitlines():
        words = line.split("#", 1)[0].split()
        if not words or "==" not in words[0]:
            continue
        name, _, version = words[0].partition("==")
        hashes = sorted(word.removeprefix("--hash=") for word in words[1:] if word.startswith("--hash="))
        pins.append(
            {"name": canonical(name.split("[")[0]), "version": version.split(";")[0], "hashes": hashes}
        )
    return sorted(pins, key=lambda pin: pin["name"])


def resolution_failure(stderr: str) -> str:
    """The resolver's reason in a line or two, naming the package."""
    found = _NOT_FOUND_RE.findall(stderr)
    if found:
        return f"no version of {found[0]} on the index satisfies it ({_last_lines(stderr, 1)})"
    return _last_lines(stderr)


def install_pip_tools(scratch: Path) -> Path:
    tools = scratch / "tools"
    install = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--no-cache-dir",
            "--target",
            str(tools),
            PIP_TOOLS,
        ],
        capture_output=True,
        text=True,
    )
    if install.returncode != 0:
        raise LockFailure(
            "python", f"cannot install {PIP_TOOLS} from the index: {_last_lines(install.stderr)}"
        )
    return tools


def resolve_python(packages: list[str], previous: list[str], scratch: Path) -> dict[str, Any]:
    shipped = base_freeze()
    tools = install_pip_tools(scratch)
    constraints = scratch / "base.txt"
    constraints.write_text("".join(f"{name}=={version}\n" for name, version in sorted(shipped.items())))
    wanted = scratch / "requirements.in"
    wanted.write_text(f"-c {constraints}\n" + "".join(f"{package}\n" for package in packages))
    output = scratch / "requirements.txt"
    output.write_text("".join(f"{pin}\n" for pin in previous))  # pip-compile keeps these pins
    compile_run = subprocess.run(
        [
            sys.executable,
            "-m",
            "piptools",
            "compile",
            "--quiet",
            "--generate-hashes",
            "--allow-unsafe",
            "--no-emit-index-url",
            "--no-emit-find-links",
            "--no-emit-trusted-host",
            "--no-header",
            "--no-annotate",
            "--strip-extras",
            "--output-file",
            str(output),
            str(wanted),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(tools), "CUSTOM_COMPILE_COMMAND": "gpufleet lock"},
    )
    if compile_run.returncode != 0:
        raise LockFailure("python", resolution_failure(compile_run.stderr))
    pins = parse_compiled(output.read_text())
    own = [pin for pin in pins if shipped.get(pin["name"]) != pin["version"]]
    return {
        "python": own,
        "base_python": [f"{name}=={version}" for name, version in sorted(shipped.items())],
    }


# --- the answer ---------------------------------------------------------------------------------


def os_release() -> str:
    fields = {}
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            key, sep, value = line.partition("=")
            if sep:
                fields[key] = value.strip().strip('"')
    except OSError:
        pass
    return f"{fields.get('ID', 'unknown')} {fields.get('VERSION_ID', '')}".strip()


def main(request: dict[str, Any]) -> dict[str, Any]:
    """request: {"python_packages": [...], "apt_packages": [...], "previous_python": ["name==version"],
    "snapshot": "20261204T000000Z" | null}."""
    with tempfile.TemporaryDirectory(prefix="gpufleet-lock-") as folder:
        scratch = Path(folder)
        try:
            answer: dict[str, Any] = {"python_version": platform.python_version(), "os": os_release()}
            answer["apt"] = resolve_apt(request["apt_packages"], request.get("snapshot"), scratch)
            answer.update(
                resolve_python(request["python_packages"], request.get("previous_python", []), scratch)
            )
        except LockFailure as failure:
            return {"error": {"stage": failure.stage, "message": failure.message}}
    return answer


if __name__ == "__main__":
    result = main(json.loads(sys.argv[1]))
    print(ANSWER_PREFIX + json.dumps(result, sort_keys=True), flush=True)
    sys.exit(1 if "error" in result else 0)
