"""Stack file -> ClusterSpec, with every problem reported as ``cluster.<path>: <message>``.

A stack file is a Pulumi ``Pulumi.<stack>.yaml``; the spec is the value of its
``config: gpufleet:cluster`` key. A YAML file whose top level is the spec
itself is accepted too (handy for tools that generate specs).
"""

from __future__ import annotations

import ipaddress
import re
import stat
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from gpufleet.errors import InputError, SpecError, SpecIssue, shown
from gpufleet.spec import strict_yaml
from gpufleet.spec.models import ClusterSpec
from gpufleet.spec.pulumi_requirements import pulumi_warnings

CONFIG_KEY = "gpufleet:cluster"
PROJECT_FILE = "Pulumi.yaml"
MAX_FILE_BYTES = 32 << 20  # a 20,000-host stack file is about 4 MiB


def find_project_root(start: Path | None = None) -> Path:
    """The folder holding ``Pulumi.yaml``: the current folder or a parent, else gpufleet's own."""
    candidates = [start or Path.cwd()]
    candidates += list(candidates[0].resolve().parents)
    candidates.append(Path(__file__).resolve().parents[2])
    for folder in candidates:
        if (folder / PROJECT_FILE).is_file():
            return folder
    raise InputError(
        f"no {PROJECT_FILE} in {candidates[0]} or its parents: run gpufleet from the project "
        "folder, or name the stack file with -f FILE"
    )


def resolve_stack_file(stack: str | None, file: Path | None) -> Path:
    """``--stack NAME`` -> ``<project>/<stackConfigDir>/Pulumi.<NAME>.yaml``; ``-f FILE`` as is."""
    if (stack is None) == (file is None):
        raise InputError("give exactly one of --stack NAME or -f FILE")
    if file is not None:
        return file
    assert stack is not None
    root = find_project_root()
    project = read_yaml(root / PROJECT_FILE)
    config_dir = root / str(project.get("stackConfigDir", ".") if isinstance(project, dict) else ".")
    path = config_dir / f"Pulumi.{stack}.yaml"
    if not path.is_file():
        known = sorted(p.name[len("Pulumi.") : -len(".yaml")] for p in config_dir.glob("Pulumi.*.yaml"))
        raise InputError(
            f"no stack {shown(stack)}: {path} does not exist (stacks here: {', '.join(known) or 'none'})"
        )
    return path


def read_text(path: Path) -> str:
    """The UTF-8 text of a regular file, or an InputError saying in one line why not."""
    try:
        info = path.stat()
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except OSError as error:
        raise InputError(f"{path}: cannot read: {error.strerror or error}") from None
    if stat.S_ISDIR(info.st_mode):
        raise InputError(f"{path}: is a folder, not a file: name the stack file (stacks/Pulumi.NAME.yaml)")
    if not stat.S_ISREG(info.st_mode):
        raise InputError(f"{path}: is not a regular file (a device, pipe or socket): name a stack file")
    if info.st_size > MAX_FILE_BYTES:
        raise InputError(
            f"{path}: is {info.st_size / 2**20:.0f} MiB; a stack file is at most "
            f"{MAX_FILE_BYTES >> 20} MiB (a 20,000-host spec is about 4 MiB)"
        )
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_FILE_BYTES + 1)
    except PermissionError:
        raise InputError(f"{path}: permission denied: run as a user that may read it") from None
    except OSError as error:
        raise InputError(f"{path}: cannot read: {error.strerror or error}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        hint = " (it looks like UTF-16)" if data[:2] in (b"\xff\xfe", b"\xfe\xff") else ""
        raise InputError(
            f"{path}: is not UTF-8 text{hint}: byte 0x{data[error.start]:02x} at offset "
            f"{error.start}; save the file as UTF-8"
        ) from None
    return text.removeprefix("\ufeff")


def read_yaml(path: Path) -> Any:
    """The one YAML document in a file, as plain data; refuses what no spec needs (exit 2).

    Every refusal is one line: the file, where, and why (see ``strict_yaml``).
    """
    text = read_text(path)
    try:
        return strict_yaml.load(text)
    except strict_yaml.YamlProblem as problem:
        raise SpecError(str(path), [SpecIssue("", str(problem))]) from None
    except yaml.YAMLError as error:
        raise SpecError(str(path), [SpecIssue("", f"not valid YAML: {_yaml_problem(error)}")]) from None


def read_stack_config(path: Path) -> Any:
    """The raw ``gpufleet:cluster`` value of a stack file (or a bare spec file)."""
    source = str(path)
    document = read_yaml(path)
    if isinstance(document, dict) and isinstance(document.get("config"), dict):
        config = document["config"]
        if CONFIG_KEY not in config:
            raise SpecError(source, [SpecIssue("", f"the stack file has no config key {CONFIG_KEY!r}")])
        return config[CONFIG_KEY]
    if isinstance(document, dict) and CONFIG_KEY in document:
        return document[CONFIG_KEY]
    if isinstance(document, dict) and "hosts" in document:
        return document
    raise SpecError(
        source,
        [
            SpecIssue(
                "",
                f"expected a Pulumi stack file with 'config: {CONFIG_KEY}: ...' or a spec mapping",
            )
        ],
    )


def _yaml_problem(error: yaml.YAMLError) -> str:
    """One line: 'line L, column C: problem' (PyYAML's own message spans several lines)."""
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None) or (str(error).splitlines() or ["unreadable"])[0]
    problem = " ".join(str(problem).split())[:200]
    if mark is None:
        return problem
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}"


_PLAIN_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")


def _format_loc(loc: tuple[int | str, ...]) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part == "[key]":
            continue
        elif not _PLAIN_KEY.match(part):
            path += f"[{shown(part, 40)}]"  # a user's key is quoted: it can't fake another error line
        else:
            path += f".{part}" if path else part
    return path


def _clean_message(error: Any) -> str:
    kind = error["type"]
    if kind == "missing":
        return "is required"
    if kind == "extra_forbidden":
        return "unknown key: check its spelling against the spec reference (README)"
    message = str(error["msg"])
    for prefix in ("Value error, ", "Assertion failed, "):
        if message.startswith(prefix):
            message = message[len(prefix) :]
    if "[key]" in error["loc"]:
        message = f"key {shown(error['loc'][-2], 40)}: {message}"
    return message


def issues_from_validation_error(error: ValidationError) -> list[SpecIssue]:
    """Flatten pydantic's errors into field-path issues, expanding the cross-field rules."""
    issues: list[SpecIssue] = []
    for item in error.errors(include_url=False, include_input=False):
        if item["type"] == "cluster_rules":
            issues += [SpecIssue(path, message) for path, message in item["ctx"]["issues"]]
            continue
        path = _format_loc(tuple(item["loc"]))
        issues.append(SpecIssue(path, _clean_message(item)))
    return issues


def parse_spec(data: Any, source: str = "<spec>") -> ClusterSpec:
    """Validate raw data (a mapping) into a ClusterSpec, or raise SpecError with every issue."""
    try:
        return ClusterSpec.model_validate(data)
    except ValidationError as error:
        raise SpecError(source, issues_from_validation_error(error)) from None


def load_spec(path: Path) -> ClusterSpec:
    return parse_spec(read_stack_config(path), source=str(path))


def spec_warnings(spec: ClusterSpec) -> list[str]:
    """Things that are allowed but that a reviewer should see."""
    warnings = []
    if spec.image.digest is None and spec.distribution == "registry":
        warnings.append(
            f"image.digest is not set: hosts pull {spec.image.reference}, a tag that may move; "
            "`gpufleet build --push` prints the digest to pin"
        )
    for cidr in spec.ssh.admin_cidrs:
        network = ipaddress.ip_network(cidr)
        if network.prefixlen == 0:
            warnings.append(f"ssh.admin_cidrs: {cidr} exposes SSH to the whole internet")
        elif network.is_global:
            warnings.append(f"ssh.admin_cidrs: {cidr} is a public network; prefer a VPN or bastion")
    warnings += pulumi_warnings(spec)
    if spec.network.fabric == "auto" and spec.provisioner != "pulumi":
        warnings.append(
            "network.fabric is auto: without probed facts (render --facts) the NCCL settings "
            "are generic; probe the hosts or name the fabric"
        )
    return warnings
