"""The machine's pip index settings, carried into the lock's container and the image build.

``gpufleet lock`` resolves with the index the team uses (a mirror, a private
index), read from ``pip config list`` and PIP_* variables as pip would. Local
folders (``file://`` indexes, find-links folders) are mounted read-only into
the lock's container at the same path; the build gets only network indexes.
Credentials in an index URL are refused: they would land in the image's
history. Nothing of this is written into the lock.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from gpufleet.errors import InputError

SETTINGS = ("index-url", "extra-index-url", "find-links", "trusted-host")
_LINE_RE = re.compile(r"^(?P<scope>[^.]*)\.(?P<key>[a-z-]+)='(?P<value>.*)'$")


@dataclass(frozen=True)
class PipSettings:
    index_url: str | None = None
    extra_index_urls: tuple[str, ...] = ()
    find_links: tuple[str, ...] = ()
    trusted_hosts: tuple[str, ...] = ()

    def locations(self) -> tuple[str, ...]:
        return (*((self.index_url,) if self.index_url else ()), *self.extra_index_urls, *self.find_links)


def parse_config_list(text: str, environ: Mapping[str, str]) -> PipSettings:
    """``pip config list`` output (``global.index-url='...'``) with PIP_* variables winning, as in pip."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        match = _LINE_RE.match(line.strip())
        if match and match["key"] in SETTINGS:
            values[match["key"]] = match["value"]
    for key in SETTINGS:
        env = environ.get("PIP_" + key.upper().replace("-", "_"))
        if env:
            values[key] = env
    settings = PipSettings(
        index_url=values.get("index-url"),
        extra_index_urls=tuple(values.get("extra-index-url", "").split()),
        find_links=tuple(values.get("find-links", "").split()),
        trusted_hosts=tuple(values.get("trusted-host", "").split()),
    )
    for location in settings.locations():
        if urlsplit(location).password or (urlsplit(location).username and "://" in location):
            raise InputError(
                f"pip index {urlsplit(location).hostname}: credentials in an index URL would be copied into "
                "the lock's container and the image's build history; use a netrc or keyring on the index's side"
            )
    return settings


def machine_settings() -> PipSettings:
    listing = subprocess.run(
        [sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True, check=False
    )
    return parse_config_list(listing.stdout, os.environ)


def _folder(location: str) -> Path | None:
    if location.startswith("file://"):
        return Path(urlsplit(location).path)
    if "://" not in location:
        return Path(location)
    return None


def container_env(settings: PipSettings) -> dict[str, str]:
    """PIP_* variables for the lock's container (local folders are mounted at the same path)."""
    env = {}
    if settings.index_url:
        env["PIP_INDEX_URL"] = settings.index_url
    for key, values in (
        ("PIP_EXTRA_INDEX_URL", settings.extra_index_urls),
        ("PIP_FIND_LINKS", settings.find_links),
        ("PIP_TRUSTED_HOST", settings.trusted_hosts),
    ):
        if values:
            env[key] = " ".join(values)
    return env


def local_folders(settings: PipSettings) -> tuple[Path, ...]:
    """The folders to mount read-only into the lock's container: those that exist here."""
    folders = (_folder(location) for location in settings.locations())
    # A file:// index's pages link to files beside it (../../files/x.whl): mount its parent too.
    mounts = {
        folder.parent if folder.name == "simple" else folder for folder in folders if folder is not None
    }
    return tuple(sorted(folder for folder in mounts if folder.is_dir()))


def build_args(settings: PipSettings) -> dict[str, str]:
    """The network indexes only, as ``--build-arg`` values (a build cannot see this machine's folders)."""
    network = PipSettings(
        index_url=settings.index_url if settings.index_url and _folder(settings.index_url) is None else None,
        extra_index_urls=tuple(u for u in settings.extra_index_urls if _folder(u) is None),
        find_links=tuple(u for u in settings.find_links if _folder(u) is None),
        trusted_hosts=settings.trusted_hosts,
    )
    return container_env(network)
