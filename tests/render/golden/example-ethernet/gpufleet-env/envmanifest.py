"""The image's environment manifest (standard library only; runs in the image and in each container).

``write [PATH]`` (the image build's last step) records what the image holds,
``check [PATH] [--quick]`` (preflight, train) compares the live environment
with it and prints one JSON line. The manifest:

- python: every importable distribution (as the running user sees it: the
  login user's own site-packages included) -> version;
- dpkg: every installed package (``name:arch``) -> version;
- runtime: Python, torch, CUDA, cuDNN and NCCL versions as torch reports them
  when loaded (package metadata can lie: pytorch#122571). ``--quick`` skips it
  (no torch import: cheap enough for every ``train``);

Beside it, not in it (its digest names the image's contents, and two builds of
the same lock must agree), ``environment.stamp``: the modification times and
sizes of every folder on sys.path and of dpkg's status file. Installing
anything (pip, pip --user, apt) changes one of them, and an image's layers keep
them: ``--quick`` on an unchanged container compares the stamp alone and lists
nothing; a changed stamp is compared in full.

Canonical JSON bytes: the file's sha256 is the image's ``org.gpufleet.manifest`` label.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import platform
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

MANIFEST = "/etc/gpufleet/environment.json"
MANIFEST_VERSION = 1
MISSING = "(none)"
_RUNTIME = (
    "import json, platform\n"
    "out = {'python': platform.python_version()}\n"
    "try:\n"
    "    import torch\n"
    "except Exception as error:\n"
    "    out['torch'] = 'cannot import: ' + type(error).__name__\n"
    "else:\n"
    "    out['torch'] = torch.__version__\n"
    "    out['cuda'] = torch.version.cuda\n"
    "    out['cudnn'] = torch.backends.cudnn.version()\n"
    "    try:\n"
    "        out['nccl'] = '.'.join(map(str, torch.cuda.nccl.version()))\n"
    "    except Exception:\n"
    "        out['nccl'] = None\n"
    "print(json.dumps(out))\n"
)


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def python_distributions() -> dict[str, str]:
    """name -> version of what ``import`` would find first, over this user's sys.path."""
    # Run as a file, its own folder is on sys.path (not the environment's); run with -c, it is not.
    found: dict[str, str] = {}
    for distribution in importlib.metadata.distributions(path=_search_path()):
        name = distribution.metadata["Name"]
        if name:
            found.setdefault(canonical(name), distribution.version)
    return dict(sorted(found.items()))


def dpkg_packages() -> dict[str, str]:
    try:
        listing = subprocess.run(
            ["dpkg-query", "-W", "-f", "${db:Status-Abbrev}\t${Package}:${Architecture}\t${Version}\n"],
            capture_output=True,
            text=True,
            check=False,
        )
    except OSError:
        return {}
    found = {}
    for line in listing.stdout.splitlines():
        status, _, rest = line.partition("\t")
        name, _, version = rest.partition("\t")
        if status.startswith("ii") and name:
            found[name] = version
    return dict(sorted(found.items()))


def runtime_versions() -> dict[str, Any]:
    run = subprocess.run([sys.executable, "-c", _RUNTIME], capture_output=True, text=True, check=False)
    try:
        answer = json.loads(run.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {"python": platform.python_version(), "torch": "cannot import"}
    return answer if isinstance(answer, dict) else {}


DPKG_STATUS = "/var/lib/dpkg/status"


def _search_path() -> list[str]:
    script_dir = str(Path(__file__).resolve().parent) if "__file__" in globals() else None
    return [entry for entry in sys.path if entry and entry != script_dir]


def stamp_path(manifest: str) -> Path:
    return Path(manifest).with_suffix(".stamp")


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def stamp() -> str:
    """sha256 of (path, mtime, size) of each sys.path folder and dpkg's status: what an install changes."""
    parts = []
    for path in [*_search_path(), DPKG_STATUS]:
        try:
            info = os.stat(path)
        except OSError:
            continue  # absent: a user site-packages that appears later changes the stamp
        parts.append(f"{path}\t{info.st_mtime_ns}\t{info.st_size}")
    return digest("\n".join(parts).encode())


def collect(quick: bool = False) -> dict[str, Any]:
    manifest: dict[str, Any] = {
        "version": MANIFEST_VERSION,
        "python": python_distributions(),
        "dpkg": dpkg_packages(),
    }
    if not quick:
        manifest["runtime"] = runtime_versions()
    return manifest


def manifest_bytes(manifest: dict[str, Any]) -> bytes:
    return (json.dumps(manifest, indent=1, sort_keys=True) + "\n").encode()


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def differences(expected: dict[str, Any], live: dict[str, Any]) -> list[dict[str, str]]:
    """[{"section", "name", "expected", "live"}] for every entry added, removed or at another version."""
    found = []
    for section in ("python", "dpkg", "runtime"):
        if section not in expected or section not in live:
            continue
        want, have = expected[section], live[section]
        for name in sorted(set(want) | set(have)):
            if want.get(name, MISSING) != have.get(name, MISSING):
                found.append(
                    {
                        "section": section,
                        "name": name,
                        "expected": str(want.get(name, MISSING)),
                        "live": str(have.get(name, MISSING)),
                    }
                )
    return found


def quick_digest(manifest: dict[str, Any]) -> str:
    """Of the python and dpkg sections: what ``--quick`` can compare between hosts."""
    return digest(
        manifest_bytes({key: manifest[key] for key in ("version", "python", "dpkg") if key in manifest})
    )


def check(path: str, quick: bool) -> dict[str, Any]:
    try:
        data = Path(path).read_bytes()
        expected = json.loads(data)
    except (OSError, ValueError) as error:
        return {"manifest_digest": None, "error": f"no manifest at {path}: {error}"}
    if quick and _read(stamp_path(path)) == stamp():  # nothing installed since the build
        return {"manifest_digest": digest(data), "live_digest": quick_digest(expected), "differences": []}
    live = collect(quick=quick)
    return {
        "manifest_digest": digest(data),
        "live_digest": quick_digest(live),
        "differences": differences(expected, live),
    }


def main(argv: list[str]) -> int:
    command = argv[0] if argv else "check"
    path = next((arg for arg in argv[1:] if not arg.startswith("--")), MANIFEST)
    if command == "write":
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(manifest_bytes(collect()))
        stamp_path(path).write_text(stamp() + "\n")
        print(digest(target.read_bytes()))
        return 0
    print(json.dumps(check(path, quick="--quick" in argv), sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
