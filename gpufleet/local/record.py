"""What `up` created, written before it creates anything, so `down` can undo it all."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from gpufleet.spec.models import ClusterSpec

RECORD_FILE = "local.json"


class HostDaemon(BaseModel):
    model_config = ConfigDict(extra="forbid")

    data_root: str
    """Leased from the image cache; kept by `down` (it holds the loaded images)."""
    run_dir: str
    """Socket, exec-root and pidfile; removed by `down`."""
    cgroup_parent: str


class LocalRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")

    cluster: str
    spec_fingerprint: str
    namespaces: list[str]
    controller_link: str
    uid: int
    pids: dict[str, int] = {}
    """Host name -> pid of its sshd (also its process group id)."""
    created_dirs: list[str] = []
    """NAS mount points `up` had to create on this machine, parents first."""
    runtime: Literal["process", "docker"] = "process"
    daemons: dict[str, HostDaemon] = {}
    """Host name -> its Docker daemon (docker runtime)."""


def spec_fingerprint(spec: ClusterSpec) -> str:
    return hashlib.sha256(spec.model_dump_json().encode()).hexdigest()


def write_record(folder: Path, record: LocalRecord) -> None:
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    temporary = folder / f".{RECORD_FILE}.tmp"
    temporary.write_text(record.model_dump_json(indent=2) + "\n")
    temporary.replace(folder / RECORD_FILE)


def read_record(folder: Path) -> LocalRecord | None:
    """None when there is no record; an unreadable one is treated as absent (down still cleans by name)."""
    try:
        return LocalRecord.model_validate(json.loads((folder / RECORD_FILE).read_text()))
    except (OSError, ValueError, ValidationError):
        return None
