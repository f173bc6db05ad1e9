"""Running one build step: a pipeline of tools with its log, progress every ~10 s, a clear failure."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO

from gpufleet.errors import GpufleetError
from gpufleet.local import dockerd
from gpufleet.local.images.cache import logs_dir

Progress = Callable[[str], None]

PROGRESS_EVERY_S = 10.0

LOG_TAIL_LINES = 15

CHROOT_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
    "HOME": "/root",
}

TOOLS = {
    "dockerd": ("docker.io", "the build daemon"),
    "debootstrap": ("debootstrap", "the offline CPU base"),
    "chroot": ("coreutils", "the offline CPU base"),
    "tar": ("tar", "the offline CPU base"),
}


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


def last_line(path: Path) -> str:
    tail = log_tail(path, 1)
    return tail if len(tail) <= 120 else tail[:117] + "..."


def open_log(name: str) -> Path:
    """An empty log under the cache (a user who cannot write there: under the temp folder)."""
    for folder in (logs_dir(), Path(tempfile.gettempdir()) / f"gpufleet-logs-{os.getuid()}"):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"{name}.log"
            path.write_text("")
            return path
        except PermissionError:
            continue
    raise GpufleetError(f"image: cannot write a log under {logs_dir()} or the temp folder")


def kill_all(processes: Sequence[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        if process.poll() is None:
            process.kill()
    for process in processes:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(10)


def run_step(
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
                        kill_all(processes)
                        out.write(f"gpufleet: stopped after {timeout:.0f} s\n".encode())
                        break
                    progress(f"image: {step}: {time.monotonic() - started:.0f} s ... {last_line(log)}")
            for process in processes:
                process.wait()
        finally:
            kill_all(processes)
    failed = [(argv[0], p.returncode) for argv, p in zip(pipeline, processes, strict=True) if p.returncode]
    if failed:
        tool, code = failed[-1]
        raise GpufleetError(
            f"image: {step} failed ({Path(tool).name} exited {code}); the last lines of its log ({log}):\n    "
            + log_tail(log)
        )


def require_tool(tool: str) -> None:
    if shutil.which(tool, path=CHROOT_ENV["PATH"]) is None:
        package, what = TOOLS[tool]
        raise GpufleetError(
            f"image: {tool} is missing ({what} needs it): install it with "
            f"`apt-get install -y {package}` (or run `make setup`)"
        )


def require_docker() -> None:
    require_tool("dockerd")
    if not os.access(dockerd.DOCKER_CLI, os.X_OK):
        raise GpufleetError(
            f"image: {dockerd.DOCKER_CLI} (Debian's docker CLI, matching its dockerd) is missing: "
            "install it with `apt-get install -y docker.io` (or run `make setup`)"
        )
