"""Runs: names, where their folders live, the run record, and the code archive.

A run's folder lives on the first writable NAS share (one folder every host
sees, so the code is copied once and every host's log sits side by side), else
in each host's home folder (the code is then copied to every host).
"""

from __future__ import annotations

import hashlib
import io
import re
import secrets
import tarfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from gpufleet.spec.models import ClusterSpec

RUNS_FOLDER = "gpufleet-runs"
HOME_RUNS_ROOT = f"~/{RUNS_FOLDER}"
RECORD_FILE = "run.json"
# Left out of the code archive: caches, VCS data, virtualenvs, local checkpoints.
SKIPPED_NAMES = frozenset(
    {"__pycache__", ".git", ".venv", "venv", ".mypy_cache", ".pytest_cache", "checkpoints"}
)
MAX_CODE_BYTES = 64 * 1024 * 1024
_RUN_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")


@dataclass(frozen=True)
class RunLocation:
    """``root`` holds one folder per run; ``shared`` when every host sees the same folder."""

    root: str
    shared: bool

    def run_dir(self, run_id: str) -> str:
        return str(PurePosixPath(self.root) / run_id)


def run_location(spec: ClusterSpec) -> RunLocation:
    for share in spec.nas:
        if not share.read_only:
            return RunLocation(root=str(PurePosixPath(share.mount) / RUNS_FOLDER), shared=True)
    return RunLocation(root=HOME_RUNS_ROOT, shared=False)


def new_run_id(script: str, now: datetime | None = None, token: str | None = None) -> str:
    """``<script stem>-<UTC time>-<4 hex>``: sortable, unique, safe as a folder and rdzv id."""
    stem = re.sub(r"[^a-z0-9]+", "-", Path(script).stem.lower()).strip("-")[:24] or "run"
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%d-%H%M%S")
    return f"{stem}-{stamp}-{token or secrets.token_hex(2)}"


def check_run_name(name: str) -> str:
    if not _RUN_NAME_RE.match(name) or ".." in name:
        raise ValueError(
            f"{name!r} is not a run name: use 1-64 lowercase letters, digits, '.', '_' and '-' "
            "(it names a folder and the rendezvous id)"
        )
    return name


def spec_hash(spec: ClusterSpec) -> str:
    """sha256 of the spec's canonical JSON: which cluster definition a run used."""
    return "sha256:" + hashlib.sha256(spec.model_dump_json().encode()).hexdigest()


HostStateName = Literal["running", "succeeded", "failed", "stopped", "lost", "missing", "unreachable"]
RunStateName = Literal["running", "succeeded", "failed", "stopped", "lost", "missing", "unknown"]
ENDED_STATES: frozenset[str] = frozenset({"succeeded", "failed", "stopped", "lost"})


class HostState(BaseModel):
    """One host's part of a run: its state file (``hosts/<host>.json``), as the agent reports it.

    The agent decides ``state`` (once, when the job ends there); ``lost`` is a
    host whose supervisor is gone or that went unheard for
    ``training.host_timeout_s``; ``unreachable`` a host this command could not
    reach over SSH.
    """

    model_config = ConfigDict(extra="ignore")

    state: HostStateName
    host: str | None = None
    pid: int | None = None
    tag: str | None = None
    started: float | None = None
    ended: float | None = None
    exit_code: int | None = None
    reason: str = ""
    failed_at: float | None = Field(
        default=None, description="When this host's first worker exited (the failure began)."
    )
    fenced: bool = Field(default=False, description="It stopped itself: it could reach no other host.")
    lost_peers: list[str] = Field(default_factory=list)
    log_bytes: int | None = None

    @property
    def ended_here(self) -> bool:
        return self.state in ENDED_STATES


class RunRecord(BaseModel):
    """``run.json`` in the run folder: what ran where, and how it ended."""

    model_config = ConfigDict(extra="forbid")

    run: str
    cluster: str
    spec_hash: str
    image_digest: str | None
    lock_digest: str | None = Field(default=None, description="sha256 of the lock file the image installs.")
    manifest_digest: str | None = Field(
        default=None, description="sha256 of the environment manifest every host runs (checked at start)."
    )
    image_ids: dict[str, str | None] = Field(default_factory=dict, description="Each host's image id.")
    script: str
    args: list[str]
    workdir: str = Field(description="The controller folder synced into code/.")
    command: dict[str, list[str]] = Field(description="The torchrun argv per host.")
    hosts: list[str]
    nnodes: int
    nproc_per_node: dict[str, int]
    run_dir: dict[str, str] = Field(description="The run folder per host (one path when shared).")
    shared: bool
    started: float
    ended: float | None = None
    state: RunStateName = "running"
    exit_codes: dict[str, int | None] = Field(default_factory=dict)
    host_states: dict[str, HostStateName] = Field(default_factory=dict)
    first_failed: str | None = None
    why: str | None = Field(default=None, description="How the run ended, when it did not simply succeed.")
    lost_hosts: list[str] = Field(default_factory=list, description="Hosts that were lost during the run.")
    finished_hosts: list[str] = Field(
        default_factory=list, description="Hosts on which the job finished (succeeded)."
    )
    min_hosts: int | None = Field(default=None, description="training.min_hosts of the run.")

    def started_text(self) -> str:
        return _format_time(self.started)

    def ended_text(self) -> str:
        return _format_time(self.ended) if self.ended else "-"


def _format_time(stamp: float) -> str:
    return datetime.fromtimestamp(stamp, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def summarize_states(states: dict[str, str], min_hosts: int | None = None) -> RunStateName:
    """The run's state from its hosts' states (failed beats stopped beats running ...).

    With ``min_hosts``: a run whose lost hosts left at least that many hosts
    that all succeeded succeeded (the job re-formed on them).
    """
    values = set(states.values())
    finished = [name for name, state in states.items() if state == "succeeded"]
    if min_hosts is not None and values <= {"succeeded", "lost"} and len(finished) >= min_hosts:
        return "succeeded"
    if values & {"failed", "lost"}:
        return "failed"
    for state in ("stopped", "running", "missing"):
        if state in values:
            return state
    if "unreachable" in values:
        return "running"  # not known to have ended
    return "succeeded" if values == {"succeeded"} else "unknown"


def first_failed(host_states: dict[str, HostState]) -> str | None:
    """The host where the failure began; never one that was only stopped.

    A lost host comes first (the others' workers fail because it is gone, and a
    lost host cannot say when it died). Otherwise the failed host whose first
    worker exited earliest: the peers' workers die of that exit a little later.
    """
    lost = [
        (state.ended or time.time(), name) for name, state in host_states.items() if state.state == "lost"
    ]
    if lost:
        return min(lost)[1]
    failed = [
        (state.failed_at or state.ended or time.time(), name)
        for name, state in host_states.items()
        if state.state == "failed"
    ]
    return min(failed)[1] if failed else None


def code_archive(folder: Path) -> bytes:
    """A tar of ``folder`` (without caches and checkpoints), to unpack as the run's code/."""
    buffer = io.BytesIO()
    total = 0
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for path in sorted(folder.rglob("*")):
            relative = path.relative_to(folder)
            if any(part in SKIPPED_NAMES for part in relative.parts) or path.is_symlink():
                continue
            if path.is_file():
                total += path.stat().st_size
                if total > MAX_CODE_BYTES:
                    raise ValueError(
                        f"{folder} holds more than {MAX_CODE_BYTES // 2**20} MiB: put data on a NAS share "
                        "and pass --workdir with only the code"
                    )
                tar.add(path, arcname=str(relative), recursive=False)
    return buffer.getvalue()
