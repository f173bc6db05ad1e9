"""Preflight: what every host has (the probe), what a run will do there (hostcheck), judged.

Three steps over the open connections, each on all hosts in parallel: host 0
listens on the rendezvous port; every host runs the probe and the checks; the
controller reads each host's clock. ``evaluate`` is pure: facts in, one
``Check`` per host and check out; ``gpufleet.lint`` adds its findings on the
live facts. Checks that do not apply are ``skipped``, never ``ok``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from rich.console import Console, ConsoleOptions, RenderResult
from rich.text import Text

from gpufleet.errors import GpufleetError
from gpufleet.facts import HostFacts, parse_facts
from gpufleet.launcher.environment import HostEnvironment, expected_manifest, host_problem, read_environments
from gpufleet.launcher.remote import shell_command
from gpufleet.lint import lint
from gpufleet.lint.findings import Finding
from gpufleet.lint.report import finding_lines
from gpufleet.spec.models import ClusterSpec

Status = Literal["ok", "warn", "fail", "skipped"]
CHECKS = ("versions", "cuda", "nas", "rendezvous", "clock", "memlock", "shm", "rdma", "lint", "environment")
COLUMNS = {name: {"rendezvous": "rdzv", "environment": "env"}.get(name, name) for name in CHECKS}
"""Each check's column heading: short enough that a 20-character host name still fits 80 columns."""
CLOCK_WARN_S = 0.25
CLOCK_FAIL_S = 1.0
LISTEN_SECONDS = 15
GPU_SHM_MIN_BYTES = 1 << 30
CPU_SHM_WARN_BYTES = 256 << 20
_STYLE = {"ok": "green", "warn": "yellow", "fail": "bold red", "skipped": "dim"}


@dataclass(frozen=True)
class Check:
    status: Status
    summary: str
    detail: str = ""


@dataclass
class PreflightReport:
    hosts: list[str]
    results: dict[str, dict[str, Check]]
    findings: list[Finding] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return bool(self.failed_hosts())

    def failed_hosts(self) -> list[str]:
        return [h for h in self.hosts if any(c.status == "fail" for c in self.results[h].values())]

    def table(self) -> PreflightGrid:
        """One line per host, a mark per check; the failures and warnings are in ``details``."""
        return PreflightGrid(self.hosts, self.results)

    def details(self) -> list[str]:
        lines = [
            f"{host} {name}: {check.status.upper()}: {check.detail or check.summary}"
            for host in self.hosts
            for name, check in self.results[host].items()
            if check.status in ("fail", "warn") and name != "lint"  # findings follow in full
        ]
        return lines + finding_lines(self.findings)


_MARK: dict[Status, str] = {"ok": "ok", "warn": "warn", "fail": "FAIL", "skipped": "-"}
LEGEND = "ok: passed; warn, FAIL: spelled out below; -: does not apply to this host; rdzv: rendezvous, env: environment"
_GAP = " "
_HOST_GAP = "  "


@dataclass(frozen=True)
class PreflightGrid:
    """The preflight table, laid out for the console's width without breaking a word.

    Wide enough: ``host  versions  cuda ...`` then one line per host. Narrower: each
    host's name on its own line above its marks. Narrower still (under
    about 60 columns): one ``host: check=mark ...`` paragraph per host, wrapped between words.
    """

    hosts: list[str]
    results: dict[str, dict[str, Check]]

    def _marks(self, host: str, widths: list[int]) -> Text:
        line = Text()
        for index, (name, width) in enumerate(zip(CHECKS, widths, strict=True)):
            status = self.results[host][name].status
            mark = _MARK[status]
            line.append(mark, style=_STYLE[status])
            if index < len(CHECKS) - 1:
                line.append(" " * (width - len(mark)) + _GAP)
        return line

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        width = options.max_width
        widths = [max(len(COLUMNS[name]), len(_MARK["warn"])) for name in CHECKS]
        header = _GAP.join(COLUMNS[name].ljust(w) for name, w in zip(CHECKS, widths, strict=True)).rstrip()
        host_width = max(len("host"), *(len(host) for host in self.hosts))
        yield Text("preflight", style="bold")
        if host_width + len(_HOST_GAP) + len(header) <= width:
            yield Text("host".ljust(host_width) + _HOST_GAP + header, style="bold", no_wrap=True)
            for host in self.hosts:
                yield Text(host.ljust(host_width) + _HOST_GAP, no_wrap=True) + self._marks(host, widths)
        elif len(_HOST_GAP) + len(header) <= width:
            yield Text(_HOST_GAP + header, style="bold", no_wrap=True)
            for host in self.hosts:
                yield Text(host, overflow="fold")  # longer than the line: the only way to show it
                yield Text(_HOST_GAP, no_wrap=True) + self._marks(host, widths)
        else:
            for host in self.hosts:
                line = Text(f"{host}:")
                for name in CHECKS:
                    status = self.results[host][name].status
                    line.append(f" {COLUMNS[name]}=")  # one word: a wrap never parts a check from its mark
                    line.append(_MARK[status], style=_STYLE[status])
                yield line
        yield Text(LEGEND, style="dim")


# -- judging (pure) ------------------------------------------------------------------------


def _size(value: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if value >= scale:
            return f"{value / scale:.0f} {unit}"
    return f"{value} B"


def _versions(facts: HostFacts | None) -> dict[str, str]:
    if facts is None:
        return {}
    torch = facts.torch
    found = {"python": facts.python or "?", "torch": (torch.version if torch else None) or "missing"}
    if torch and torch.cuda:
        found["cuda"] = torch.cuda
    if torch and torch.nccl_version:
        found["nccl"] = torch.nccl_version
    return found


def check_versions(host: str, facts: dict[str, HostFacts | None], reference: str) -> Check:
    mine = _versions(facts.get(host))
    if not mine:
        return Check("fail", "no facts", "the probe did not run on this host")
    text = " ".join(f"{k} {v}" for k, v in mine.items() if k != "python")
    if mine["torch"] == "missing":
        return Check("fail", "torch missing", f"{host}: torch is not importable by the host's python")
    theirs = _versions(facts.get(reference))
    differ = [f"{k} {mine[k]} vs {theirs.get(k)}" for k in mine if theirs and theirs.get(k) != mine[k]]
    if differ:
        return Check("fail", text, f"differs from {reference}: {', '.join(differ)}; use one image everywhere")
    return Check("ok", text)


def check_cuda(declared: int, facts: HostFacts | None, cuda: dict[str, Any] | None) -> Check:
    if declared == 0:
        return Check("skipped", "0 GPUs declared")
    smi = len(facts.gpus or []) if facts else 0
    if cuda is None or "error" in cuda:
        why = (cuda or {}).get("error", "not run")
        return Check("fail", "torch cuda failed", f"torch could not use CUDA: {why}")
    seen = int(cuda.get("device_count", 0))
    if seen == 0 and smi > 0:
        return Check(
            "fail",
            "no GPU access",
            f"nvidia-smi sees {smi} GPUs but torch sees none: the container lacks GPU access "
            "(e.g. docker run without --gpus all, or no NVIDIA container runtime)",
        )
    if seen < declared:
        return Check(
            "fail", f"{seen}/{declared} GPUs", f"torch sees {seen} GPUs, the spec declares {declared}"
        )
    if not cuda.get("matmul"):
        return Check("fail", f"{seen} GPUs", "a matmul on cuda:0 failed")
    return Check("ok", f"{seen} GPUs, matmul ok")


def check_nas(spec: ClusterSpec, nas: dict[str, dict[str, Any]] | None) -> Check:
    if not spec.nas:
        return Check("skipped", "no shares")
    problems = []
    for share in spec.nas:
        found = (nas or {}).get(share.mount, {})
        if not found.get("exists"):
            problems.append(f"{share.mount} ({share.name}) is missing")
        elif not found.get("readable"):
            problems.append(f"{share.mount} is not readable: {found.get('error', '')}")
        elif not share.read_only and not found.get("writable"):
            problems.append(f"{share.mount} is not writable: {found.get('error', '')}")
    if problems:
        return Check("fail", "; ".join(p.split(" ")[0] for p in problems), "; ".join(problems))
    return Check("ok", " ".join(s.mount + (" ro" if s.read_only else " rw") for s in spec.nas))


def check_rendezvous(
    spec: ClusterSpec, host: str, listener: dict[str, Any] | None, reach: dict[str, Any] | None
) -> Check:
    first = spec.hosts[0]
    port = spec.network.rdzv_port
    if host == first.name:
        if listener and listener.get("bound"):
            return Check("ok", f"listens :{port}")
        error = (listener or {}).get("error", "not run")
        return Check("warn", f":{port} busy", f"could not listen on {port} ({error}); is a run in progress?")
    if reach and reach.get("ok"):
        return Check("ok", f"reached in {reach.get('ms')} ms", f"{first.address}:{port}")
    error = (reach or {}).get("error", "not run")
    return Check(
        "fail",
        f"{first.address}:{port} unreachable",
        f"cannot connect to {first.name}'s rendezvous port {first.address}:{port} ({error}); "
        "a firewall between the hosts blocks it, or the address is wrong",
    )


def check_clock(offset: float | None) -> Check:
    if offset is None:
        return Check("fail", "unknown", "could not read the host's clock")
    text = f"{offset * 1000:+.0f} ms"
    if abs(offset) > CLOCK_FAIL_S:
        return Check("fail", text, f"clock is {offset:+.2f} s off the controller's: enable NTP/chrony")
    if abs(offset) > CLOCK_WARN_S:
        return Check("warn", text, "clock offset above 250 ms: check NTP/chrony")
    return Check("ok", text)


def check_memlock(spec: ClusterSpec, facts: HostFacts | None) -> Check:
    if facts is None or facts.memlock is None:
        return Check("fail" if spec.network.is_rdma else "skipped", "unknown")
    soft = facts.memlock.soft
    text = "unlimited" if soft == "unlimited" else _size(soft)
    if spec.network.is_rdma and soft != "unlimited":
        return Check("fail", text, "RDMA pins memory: set ulimit -l unlimited (container.memlock_unlimited)")
    if spec.container.memlock_unlimited and soft != "unlimited":
        return Check(
            "warn",
            text,
            "container.memlock_unlimited asks for unlimited, but this host caps memlock (a local "
            "cluster on a machine without CAP_SYS_RESOURCE); RDMA would fail here",
        )
    return Check("ok", text)


def check_shm(spec: ClusterSpec, gpus: int, facts: HostFacts | None) -> Check:
    if facts is None or facts.shm_bytes is None:
        return Check("warn", "unknown", "could not read /dev/shm")
    text = _size(facts.shm_bytes)
    if gpus > 0 and facts.shm_bytes < GPU_SHM_MIN_BYTES:
        return Check("fail", text, "NCCL needs /dev/shm of 1 GiB or more (container.shm_size_gib)")
    if facts.shm_bytes < CPU_SHM_WARN_BYTES:
        return Check("warn", text, "/dev/shm under 256 MiB: DataLoader workers may fail")
    return Check("ok", text)


def check_rdma(spec: ClusterSpec, hcas: list[str], facts: HostFacts | None) -> Check:
    if not spec.network.is_rdma:
        return Check("skipped", spec.network.fabric)
    if facts is None or not facts.dev_infiniband:
        return Check("fail", "no /dev/infiniband", "pass /dev/infiniband into the container (devices)")
    active = {port.name for port in facts.hca_ports(active_only=True)}
    wanted = hcas or []
    missing = [h for h in wanted if h not in active and not any(a.startswith(f"{h}:") for a in active)]
    if missing or not active:
        return Check(
            "fail", f"{len(active)} ACTIVE", f"HCA ports not ACTIVE: {', '.join(missing) or 'none active'}"
        )
    return Check("ok", ", ".join(sorted(active)))


def check_lint(host: str, findings: list[Finding]) -> Check:
    mine = [f for f in findings if f.host in (host, None)]
    errors = [f for f in mine if f.severity == "error"]
    if errors:
        return Check("fail", f"{len(errors)} error(s)", "; ".join(f"{f.code}: {f.message}" for f in errors))
    if mine:
        return Check("warn", ", ".join(f.code for f in mine), "see the lint findings below")
    return Check("ok", "no findings")


def check_environment(spec: ClusterSpec, env: HostEnvironment | None, expected: str | None) -> Check:
    """The container runs the team's image, unchanged since it was built (its manifest)."""
    if not spec.runs_image:
        return Check("skipped", "no image (process runtime)")
    if env is None:
        return Check("fail", "not read", "the environment check did not run on this host")
    if env.no_manifest and expected is None:  # no host has one: unverifiable, not drifted
        return Check("warn", "no manifest", f"{env.error}: build the image with gpufleet build to verify it")
    problem = host_problem(env, expected)
    if problem is None:
        return Check("ok", f"as its image ({env.manifest_digest})")
    if env.drifted and not env.error and (not expected or env.manifest_digest == expected):
        return Check("fail", f"{len(env.differences)} package(s) drifted", problem)
    return Check("fail", "not the team's environment", problem)


def evaluate(
    spec: ClusterSpec,
    facts: dict[str, HostFacts | None],
    checks: dict[str, dict[str, Any]],
    listener: dict[str, Any] | None,
    offsets: dict[str, float | None],
    findings: list[Finding],
    environments: dict[str, HostEnvironment] | None = None,
    declared_manifest: str | None = None,
) -> dict[str, dict[str, Check]]:
    """One Check per host and check name, from everything the hosts reported."""
    reference = spec.hosts[0].name
    envs = environments or {}
    expected = expected_manifest(envs, declared_manifest)
    results = {}
    for host in spec.hosts:
        mine = checks.get(host.name, {})
        results[host.name] = {
            "versions": check_versions(host.name, facts, reference),
            "cuda": check_cuda(host.gpus, facts.get(host.name), mine.get("cuda")),
            "nas": check_nas(spec, mine.get("nas")),
            "rendezvous": check_rendezvous(spec, host.name, listener, mine.get("rdzv")),
            "clock": check_clock(offsets.get(host.name)),
            "memlock": check_memlock(spec, facts.get(host.name)),
            "shm": check_shm(spec, host.gpus, facts.get(host.name)),
            "rdma": check_rdma(spec, list(host.hcas), facts.get(host.name)),
            "lint": check_lint(host.name, findings),
            "environment": check_environment(spec, envs.get(host.name), expected),
        }
    return results


# -- gathering (over SSH) -------------------------------------------------------------------


def _source(module_file: str) -> str:
    return Path(module_file).read_text()


def _last_json(text: str) -> dict[str, Any] | None:
    try:
        data = json.loads(text.strip().splitlines()[-1]) if text.strip() else None
    except ValueError:
        # The probe prints indented JSON over several lines.
        try:
            data = json.loads(text)
        except ValueError:
            return None
    return data if isinstance(data, dict) else None


def listener_kill_command(pid: object) -> str | None:
    """Kill the port listener, only if ``pid`` still is it (it may have exited and the pid been reused)."""
    try:
        number = int(str(pid))
    except ValueError:
        return None
    if number <= 0:
        return None
    return f"grep -qa listen /proc/{number}/cmdline && kill {number}"


def run_preflight(cluster: Any) -> PreflightReport:
    """Gather from every host (in parallel) over ``cluster.hosts`` and evaluate."""
    from gpufleet.hostscripts import hostcheck
    from gpufleet.hostscripts import probe as probe_module

    spec: ClusterSpec = cluster.spec
    names: list[str] = cluster.names
    first = spec.hosts[0]
    check_src = _source(hostcheck.__file__)
    listen = cluster.hosts.run(
        first.name,
        shell_command(
            [
                cluster.python(first.name),
                "-c",
                check_src,
                "listen",
                str(spec.network.rdzv_port),
                str(LISTEN_SECONDS),
                str(len(names) - 1),
            ]
        ),
        timeout=30,
    )
    listener = _last_json(listen.stdout)

    def config(name: str) -> str:
        rdzv = None if name == first.name else {"address": first.address, "port": spec.network.rdzv_port}
        return json.dumps(
            {
                "nas": [{"mount": s.mount, "read_only": s.read_only} for s in spec.nas],
                "gpus": spec.host(name).gpus,
                "rdzv": rdzv,
            }
        )

    probe_src = _source(probe_module.__file__)

    def gather(name: str) -> tuple[HostFacts | None, dict[str, Any], float | None]:
        python = cluster.python(name)
        before = time.time()
        clock = cluster.hosts.run(name, shell_command(["date", "+%s.%N"]), timeout=30)
        after = time.time()
        try:
            offset: float | None = float(clock.stdout.strip()) - (before + after) / 2
        except ValueError:
            offset = None
        checked = cluster.hosts.run(
            name, shell_command([python, "-c", check_src, "check", config(name)]), timeout=180
        )
        probed = cluster.hosts.run(name, shell_command([python, "-c", probe_src]), timeout=180)
        raw = _last_json(probed.stdout)
        try:
            facts = parse_facts(raw, f"{name} (probe)") if raw is not None else None
        except GpufleetError:
            facts = None
        return facts, _last_json(checked.stdout) or {}, offset

    gathered = cluster.hosts.each(gather).raise_first()
    if listener and listener.get("pid"):
        # Free the rendezvous port now (a host that never connected would keep it
        # busy for LISTEN_SECONDS, and a run started next needs it).
        command = listener_kill_command(listener["pid"])
        if command:
            cluster.hosts.run(first.name, command, timeout=30)
    environments = read_environments(cluster, quick=False, names=names) if spec.runs_image else {}
    facts = {name: gathered[name][0] for name in names}
    checks = {name: gathered[name][1] for name in names}
    offsets = {name: gathered[name][2] for name in names}
    findings = lint(spec, {name: f for name, f in facts.items() if f is not None})
    results = evaluate(
        spec, facts, checks, listener, offsets, findings, environments, cluster.inventory.manifest_digest
    )
    return PreflightReport(hosts=names, results=results, findings=findings)
