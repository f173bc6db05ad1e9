"""The cluster spec: the one description every other part of gpufleet reads.

It lives under the config key ``gpufleet:cluster`` of a Pulumi stack file.
Field checks live on the fields; rules that span fields (addresses inside the
cluster network, port collisions, NAS mounts nested in each other) are small
named functions in ``CLUSTER_RULES`` (per host: ``HOST_RULES``), each reporting
the exact field path.
"""

from __future__ import annotations

import ipaddress
import posixpath
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Annotated, ClassVar, Literal

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from gpufleet.errors import shown
from gpufleet.spec.image_ref import DIGEST_RE, ImageRef, ImageRefError
from gpufleet.spec.keys import check_public_key_line

# --- reusable field types -------------------------------------------------------------

_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")


def _no_control_chars(value: str) -> str:
    # Every string ends up inside a rendered config file: a newline would let a
    # value add its own sshd or nftables directive.
    if _CONTROL_CHARS.search(value):
        raise ValueError(
            "contains a newline or control character; these are refused so that no "
            "value can add lines to a rendered config file"
        )
    return value


_SAFE = AfterValidator(_no_control_chars)
SafeStr = Annotated[str, _SAFE]


def _matching(pattern: str, refusal: str) -> AfterValidator:
    """A check that a value matches ``pattern``; else ``<the value, shortened> <refusal>``."""
    regex = re.compile(pattern)

    def check(value: str) -> str:
        if not regex.match(value):
            raise ValueError(f"{shown(value)} {refusal}")
        return value

    return AfterValidator(check)


DnsLabel = Annotated[
    str,
    _SAFE,
    _matching(
        r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$",
        "is not a valid name: use 1-63 lowercase letters, digits and '-', "
        "starting and ending with a letter or digit (it becomes a hostname)",
    ),
]
ClusterName = Annotated[
    str,
    _SAFE,
    _matching(
        r"^[a-z][a-z0-9-]{0,22}[a-z0-9]$",
        "is not a valid cluster name: use 2-24 lowercase letters, digits "
        "and '-', starting with a letter (it prefixes resource and namespace names)",
    ),
]

_USER_RE = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")


def _login_user(value: str) -> str:
    if value == "root":
        raise ValueError(
            "root logins are refused; name an unprivileged user (e.g. 'trainer'); "
            "the container runs sshd as root and drops to this user"
        )
    if not _USER_RE.match(value):
        raise ValueError(f"{shown(value)} is not a valid POSIX user name (e.g. 'trainer')")
    return value


LoginUser = Annotated[str, _SAFE, AfterValidator(_login_user)]
Port = Annotated[int, Field(ge=1, le=65535)]


def _ip_address(value: str) -> str:
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise ValueError(f"{shown(value)} is not an IP address (e.g. 10.10.0.11)") from None


IpAddress = Annotated[str, _SAFE, AfterValidator(_ip_address)]


def _cidr(value: str) -> str:
    try:
        network = ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise ValueError(f"{shown(value)} is not a CIDR network (e.g. 10.10.0.0/16)") from None
    if str(network) != value and "/" not in value:
        # A bare address is accepted as a single-host network.
        return str(network)
    if str(network) != value:
        raise ValueError(
            f"{shown(value)} has host bits set; did you mean {network}? (write the network address)"
        )
    return value


Cidr = Annotated[str, _SAFE, AfterValidator(_cidr)]


def _absolute_path(value: str) -> str:
    if not value.startswith("/"):
        raise ValueError(f"{shown(value)} is not an absolute path (e.g. /data)")
    normal = posixpath.normpath(value)
    if normal != value or value == "/":
        raise ValueError(f"{shown(value)} is not a clean absolute path below / (e.g. /data)")
    return value


AbsPath = Annotated[str, _SAFE, AfterValidator(_absolute_path)]

_NCCL_PREFIXES = ("NCCL_", "UCX_", "FI_", "RDMAV_")
_ENV_KEY_RE = re.compile(r"^[A-Z][A-Z0-9_]*$")


def _nccl_key(value: str) -> str:
    if not _ENV_KEY_RE.match(value) or not value.startswith(_NCCL_PREFIXES):
        raise ValueError(
            "not an allowed override: keys must be upper-case environment "
            f"names starting with {', '.join(_NCCL_PREFIXES)}"
        )
    return value


NcclKey = Annotated[str, _SAFE, AfterValidator(_nccl_key)]


def _image_reference(value: str) -> str:
    try:
        ImageRef.parse(value)
    except ImageRefError as error:
        raise ValueError(str(error)) from None
    return value


ImageReference = Annotated[str, _SAFE, AfterValidator(_image_reference)]


def _python_requirement(value: str) -> str:
    try:
        requirement = Requirement(value)
    except InvalidRequirement as error:
        raise ValueError(f"{shown(value)} is not a requirement specifier ({error})") from None
    if requirement.url:
        raise ValueError(
            f"{shown(value)}: direct URLs cannot be locked by hash; name a package from the index"
        )
    return value


def _package_key(value: str) -> str:
    try:
        return canonicalize_name(Requirement(value).name)
    except InvalidRequirement:
        return value


PythonRequirement = Annotated[str, _SAFE, AfterValidator(_python_requirement)]
AptPackage = Annotated[
    str,
    _SAFE,
    _matching(
        r"^[a-z0-9][a-z0-9+.-]+(:[a-z0-9]+)?$",
        "is not a Debian package name (lowercase, e.g. libsndfile1); versions come from gpufleet lock",
    ),
]
_DOCKER_SSH_RE = re.compile(
    r"^(?P<user>[a-z_][a-z0-9_-]{0,31})@(?P<host>[A-Za-z0-9.-]+|\[[0-9a-fA-F:]+\])(:(?P<port>\d{1,5}))?$"
)
HcaName = Annotated[
    str, _SAFE, _matching(r"^[A-Za-z0-9_]+(:\d+)?$", "is not an HCA name (e.g. mlx5_0 or mlx5_0:1)")
]
IfName = Annotated[
    str, _SAFE, _matching(r"^[A-Za-z0-9_.-]{1,15}$", "is not a network interface name (e.g. eth0, ens1f0)")
]


@dataclass(frozen=True)
class SshLogin:
    """A ``user@host[:port]`` login, parsed once: ``host`` without IPv6 brackets, ``port`` None if not given."""

    written_as: ClassVar[str] = "str"  # how the spec reference names its type

    user: str
    host: str
    port: int | None = None

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.user}@{host}" + (f":{self.port}" if self.port is not None else "")


def parse_ssh_login(value: object) -> SshLogin:
    """``user@host[:port]`` -> SshLogin; the one parser of ``hosts[].docker_ssh``."""
    if isinstance(value, SshLogin):
        return value
    if not isinstance(value, str):
        raise PydanticCustomError("string_type", "Input should be a valid string")
    _no_control_chars(value)
    match = _DOCKER_SSH_RE.match(value)
    if not match or (match["port"] and not 1 <= int(match["port"]) <= 65535):
        raise ValueError(f"{shown(value)} is not user@host[:port] (e.g. admin@10.0.0.11:22)")
    port = int(match["port"]) if match["port"] else None
    return SshLogin(user=match["user"], host=match["host"].strip("[]"), port=port)


DockerSsh = Annotated[SshLogin, PlainValidator(parse_ssh_login), PlainSerializer(str, return_type=str)]

# --- models ---------------------------------------------------------------------------


class SpecModel(BaseModel):
    """Base of every spec model: a typo'd key is an error, not silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True, coerce_numbers_to_str=False)


DEFAULT_BASE_IMAGE = "pytorch/pytorch:2.9.0-cuda12.8-cudnn9-runtime"


class ImageSpec(SpecModel):
    """The training image: its packages declared here, locked, built once, pinned by digest."""

    name: ImageReference = Field(
        description="Registry reference of the training image, with an optional tag and without "
        "a digest (e.g. registry.example.com/ml/chatbot-train:v2.9).",
    )
    digest: SafeStr | None = Field(
        default=None,
        description="The pushed image's content digest, 'sha256:' + 64 hex (`gpufleet build --push` "
        "prints it). Without it hosts pull a tag, which may move.",
    )
    base: ImageReference = Field(
        default=DEFAULT_BASE_IMAGE,
        description="Base image the rendered Dockerfile builds from (a local stack without it uses "
        "the offline CPU stand-in base).",
    )
    python_packages: list[PythonRequirement] = Field(
        default_factory=list,
        description="The team's Python packages, as requirement specifiers (e.g. 'transformers>=4.40'); "
        "`gpufleet lock` pins them and every dependency with hashes, inside the base.",
    )
    apt_packages: list[AptPackage] = Field(
        default_factory=list,
        description="The team's Debian/Ubuntu packages, by name; `gpufleet lock` pins them and "
        "everything they pull in.",
    )
    distribution: Literal["registry", "ssh"] | None = Field(
        default=None,
        description="How hosts get the image: registry (push once, hosts pull) or ssh (streamed "
        "over each host's pinned SSH login into its Docker daemon, for sites without a registry). "
        "Default: ssh for local stacks, registry otherwise.",
    )

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        if "@" in value:
            raise ValueError("put the digest in image.digest, not in image.name")
        return value

    @field_validator("digest")
    @classmethod
    def _check_digest(cls, value: str | None) -> str | None:
        if value is not None and not DIGEST_RE.match(value):
            raise ValueError(
                "must be 'sha256:' followed by 64 lowercase hex digits (see "
                "'docker buildx imagetools inspect IMAGE' or the registry's digest)"
            )
        return value

    @field_validator("python_packages", "apt_packages")
    @classmethod
    def _no_duplicates(cls, value: list[str]) -> list[str]:
        names = [_package_key(item) for item in value]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"{', '.join(repeated)} listed twice: give each package once")
        return value

    @property
    def ref(self) -> ImageRef:
        """``image.name`` (and ``image.digest``) as one typed reference."""
        ref = ImageRef.parse(self.name)
        return ref.with_digest(self.digest) if self.digest else ref

    @property
    def base_ref(self) -> ImageRef:
        return ImageRef.parse(self.base)

    @property
    def reference(self) -> str:
        """What hosts pull: ``name@digest`` when pinned, else ``name:tag`` (``latest`` when untagged)."""
        return self.ref.pull


class SshSpec(SpecModel):
    """Key-only SSH into the training containers, reachable from admin networks only."""

    user: LoginUser = Field(
        default="trainer", description="Login user inside the training container (never root)."
    )
    port: Port = Field(default=2222, description="Port of the training container's sshd.")
    host_port: Port = Field(
        default=22,
        description="Port of the host's own sshd; the firewall opens it to admin_cidrs only.",
    )
    authorized_keys: list[SafeStr] = Field(
        description="OpenSSH public key lines allowed to log in as ssh.user."
    )
    admin_cidrs: list[Cidr] = Field(
        min_length=1,
        description="Networks that may reach SSH (the host's and the container's). Nothing else reaches SSH.",
    )
    expose_ssh_to_the_internet: bool = Field(
        default=False,
        description="Opt-in to allow 0.0.0.0/0 or ::/0 in admin_cidrs. Leave false.",
    )

    @field_validator("authorized_keys")
    @classmethod
    def _check_keys(cls, keys: list[str]) -> list[str]:
        if not keys:
            raise ValueError(
                "is empty: add at least one OpenSSH public key (e.g. the content of "
                "~/.ssh/id_ed25519.pub); logins are key-only"
            )
        problems = []
        for index, line in enumerate(keys):
            problem = check_public_key_line(line)
            if problem:
                problems.append(f"[{index}]: {problem}")
        if problems:
            raise PydanticCustomError("public_key", "{detail}", {"detail": "; ".join(problems)})
        return keys

    @model_validator(mode="after")
    def _check_public_ssh(self) -> SshSpec:
        for cidr in self.admin_cidrs:
            if ipaddress.ip_network(cidr).prefixlen == 0 and not self.expose_ssh_to_the_internet:
                raise PydanticCustomError(
                    "public_ssh",
                    "{cidr} opens SSH to the whole internet; list your admin or VPN "
                    "networks instead (or set ssh.expose_ssh_to_the_internet: true)",
                    {"cidr": cidr},
                )
        return self


Fabric = Literal["auto", "infiniband", "roce", "ethernet"]


class NetworkSpec(SpecModel):
    """The training network and the interconnect NCCL uses."""

    cluster_cidr: Cidr = Field(description="The training network; every host address lies inside it.")
    fabric: Fabric = Field(
        default="auto",
        description="Interconnect NCCL uses: infiniband, roce (RoCE v2), ethernet (TCP "
        "sockets only), or auto (decided from probed host facts).",
    )
    rdzv_port: Port = Field(default=29400, description="torchrun c10d rendezvous port on host 0.")
    reserved_hcas: list[HcaName] = Field(
        default_factory=list,
        description="RDMA devices used for storage or management that NCCL must never use.",
    )
    ib_traffic_class: int | None = Field(
        default=None, ge=0, le=255, description="NCCL_IB_TC for RoCE QoS (from your fabric team)."
    )
    ib_service_level: int | None = Field(default=None, ge=0, le=15, description="NCCL_IB_SL for RoCE/IB QoS.")

    @property
    def is_rdma(self) -> bool:
        return self.fabric in ("infiniband", "roce")


class NasShare(SpecModel):
    """An NFS share mounted into every training container."""

    name: DnsLabel = Field(description="Volume name (e.g. data, checkpoints).")
    server: SafeStr = Field(description="NFS server address or hostname.")
    export: AbsPath = Field(description="Exported path on the server (e.g. /export/data).")
    mount: AbsPath = Field(description="Where the share appears inside the container.")
    read_only: bool = Field(default=False, description="Mount read-only (datasets).")
    options: list[SafeStr] = Field(
        default_factory=lambda: ["nfsvers=4.1", "hard", "noatime"],
        description="NFS mount options (without addr= and ro, which are derived).",
    )

    @field_validator("server")
    @classmethod
    def _check_server(cls, value: str) -> str:
        if not re.match(r"^[A-Za-z0-9.:-]+$", value):
            raise ValueError(f"{shown(value)} is not an NFS server address or hostname")
        return value

    @field_validator("options")
    @classmethod
    def _check_options(cls, options: list[str]) -> list[str]:
        for option in options:
            if "," in option or " " in option or not option:
                raise ValueError(f"{shown(option)}: give one NFS option per list item")
            if option.split("=", 1)[0] in ("addr", "ro", "rw"):
                raise ValueError(f"{shown(option)} is derived from server/read_only; remove it")
        return options


class TrainingSpec(SpecModel):
    """torchrun defaults for `gpufleet train`."""

    nproc_per_node: Literal["auto"] | int = Field(
        default="auto",
        description="Worker processes per host; 'auto' = the host's GPU count (1 on CPU hosts).",
    )
    max_restarts: int = Field(
        default=0,
        ge=0,
        le=100,
        description="torchrun --max-restarts: how often a failed worker group is restarted (every "
        "host's workers, resuming from the script's checkpoint).",
    )
    host_timeout_s: int = Field(
        default=30,
        ge=3,
        le=3600,
        description="Seconds a host may go unheard (by the controller and by the other hosts' "
        "supervisors) before it counts as lost; a host that hears no other host for this long "
        "stops its own workers (fencing).",
    )
    min_hosts: int | None = Field(
        default=None,
        ge=1,
        description="Fewest hosts the job may continue on (torchrun --nnodes=MIN:MAX); losing hosts "
        "down to this many re-forms the job on the survivors. Default: every host (any lost host "
        "stops the run). Below the host count it needs max_restarts >= 1.",
    )

    @field_validator("nproc_per_node", mode="before")
    @classmethod
    def _check_nproc(cls, value: object) -> object:
        # One clear message instead of pydantic's two union branches.
        if value == "auto" or (type(value) is int and 1 <= value <= 1024):
            return value
        raise PydanticCustomError(
            "nproc",
            "must be 'auto' or a whole number from 1 to 1024, not {value}",
            {"value": shown(value)},
        )


class JupyterSpec(SpecModel):
    """JupyterLab in the container, on 127.0.0.1 only (reach it with ssh -L)."""

    enabled: bool = Field(default=False, description="Run JupyterLab in the training container.")
    port: Port = Field(
        default=8888,
        description="Port on 127.0.0.1 only; reach it with ssh -L. Never opened in the firewall.",
    )


class ContainerSpec(SpecModel):
    """How the training container runs. The defaults are what NCCL needs."""

    network_mode: Literal["host", "bridge"] = Field(
        default="host",
        description="host (required for NCCL across hosts; bridge is flagged by gpufleet lint).",
    )
    shm_size_gib: int = Field(default=16, ge=0, le=4096, description="/dev/shm size in GiB.")
    ipc_host: bool = Field(default=False, description="Share the host IPC namespace.")
    memlock_unlimited: bool = Field(
        default=True, description="ulimit -l unlimited (RDMA registers pinned memory)."
    )


class LocalSpec(SpecModel):
    """How `gpufleet up` runs the hosts of a ``provisioner: local`` stack on this machine."""

    runtime: Literal["docker", "process"] = Field(
        default="docker",
        description="docker: each host runs its own Docker daemon with the rendered training image "
        "and compose file, as production does (minus GPUs and NFS); process: the hosts run the "
        "project's venv directly (fast, for tests that need no container).",
    )


class HostSpec(SpecModel):
    """One GPU host."""

    name: DnsLabel = Field(description="Host name; also the container's hostname.")
    address: IpAddress = Field(description="The host's address on the training network.")
    ssh_address: SafeStr | None = Field(
        default=None, description="Where the controller reaches the host (default: address)."
    )
    docker_ssh: DockerSsh | None = Field(
        default=None,
        description="user@host[:port] that the Pulumi runner uses to reach the host's "
        "Docker daemon (default: <ssh.user>@<ssh_address>).",
    )
    gpus: int = Field(ge=0, le=64, description="GPU count; 0 = CPU-only host (gloo).")
    hcas: list[HcaName] = Field(
        default_factory=list, description="RDMA devices for NCCL when known (e.g. mlx5_0)."
    )
    ifname: IfName | None = Field(
        default=None, description="Interface that carries the host's address (e.g. eth0)."
    )
    host_key: SafeStr | None = Field(
        default=None,
        description="The host's OWN sshd public key ('ssh-ed25519 AAAA...', from "
        "/etc/ssh/ssh_host_ed25519_key.pub): the Pulumi runner pins it when it reaches "
        "the host over SSH.",
    )

    @field_validator("host_key")
    @classmethod
    def _check_host_key(cls, value: str | None) -> str | None:
        if value is None:
            return value
        problem = check_public_key_line(value)
        if problem:
            raise ValueError(problem)
        return " ".join(value.split()[:2])  # '<type> <base64>': the comment is not part of the pin

    @field_validator("ssh_address")
    @classmethod
    def _check_ssh_address(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^[A-Za-z0-9.:-]+$", value):
            raise ValueError(f"{shown(value)} is not an address or hostname")
        return value

    @property
    def reach_address(self) -> str:
        return self.ssh_address or self.address


class RunnerSpec(SpecModel):
    """The machine that runs ``pulumi up``: how it logs into each host's own sshd."""

    identity_file: SafeStr = Field(
        default="~/.ssh/id_ed25519",
        description="Path of the private key FILE on the runner (never the key itself) "
        "that logs into hosts[].docker_ssh; or set it as a Pulumi secret: "
        "pulumi config set --secret gpufleet:runner_private_key < KEYFILE.",
    )

    @field_validator("identity_file")
    @classmethod
    def _check_identity_file(cls, value: str) -> str:
        if "PRIVATE KEY" in value or value.startswith("-----"):
            raise ValueError(
                "this is a private key, not a path: give the key FILE's path, or store the "
                "key as a Pulumi secret (pulumi config set --secret gpufleet:runner_private_key)"
            )
        if not (value.startswith("/") or value.startswith("~/")) or any(c.isspace() for c in value):
            raise ValueError(
                f"{shown(value)} is not an absolute or ~/ path without spaces (e.g. ~/.ssh/id_ed25519)"
            )
        return value


class ClusterSpec(SpecModel):
    """A GPU training cluster: the value of ``gpufleet:cluster`` in a stack file."""

    name: ClusterName = Field(description="Cluster name; prefixes every resource.")
    provisioner: Literal["pulumi", "local"] = Field(
        default="pulumi",
        description="pulumi: 'pulumi up' on real hosts; local: network namespaces on this "
        "machine ('gpufleet up').",
    )
    image: ImageSpec
    ssh: SshSpec
    network: NetworkSpec
    nas: list[NasShare] = Field(default_factory=list, description="NFS shares.")
    nccl: dict[NcclKey, SafeStr] = Field(
        default_factory=dict, description="NCCL_/UCX_/FI_/RDMAV_ overrides; they win."
    )
    nccl_reasons: dict[NcclKey, SafeStr] = Field(
        default_factory=dict,
        description="Why an override is there, per key (gpufleet lint asks for one for "
        "NCCL_P2P_DISABLE, NCCL_ALGO and NCCL_PROTO).",
    )
    training: TrainingSpec = Field(default_factory=TrainingSpec)
    jupyter: JupyterSpec = Field(default_factory=JupyterSpec)
    container: ContainerSpec = Field(default_factory=ContainerSpec)
    runner: RunnerSpec = Field(default_factory=RunnerSpec)
    local: LocalSpec = Field(default_factory=LocalSpec)
    hosts: list[HostSpec] = Field(min_length=1, description="The hosts; hosts[0] runs rendezvous.")

    @field_validator("nccl", mode="before")
    @classmethod
    def _stringify_nccl_values(cls, value: object) -> object:
        # YAML turns NCCL_IB_TIMEOUT: 22 into an int; env values are strings.
        if isinstance(value, dict):
            return {k: _env_value(v) for k, v in value.items()}
        return value

    @model_validator(mode="after")
    def _check_cluster_rules(self) -> ClusterSpec:
        issues = list(_cluster_rule_issues(self))
        if issues:
            raise PydanticCustomError(
                "cluster_rules",
                "{summary}",
                {"issues": tuple(issues), "summary": "; ".join(f"{p}: {m}" for p, m in issues)},
            )
        return self

    @model_validator(mode="after")
    def _check_local_only_for_local(self) -> ClusterSpec:
        # Compared with the defaults, not by presence: a dumped and re-read spec carries them.
        if self.provisioner != "local" and self.local != LocalSpec():
            raise PydanticCustomError(
                "local_key",
                "local: applies only to provisioner: local stacks; remove it or set provisioner: local",
            )
        return self

    @model_validator(mode="after")
    def _check_distribution(self) -> ClusterSpec:
        if self.provisioner == "local" and self.image.distribution == "registry":
            raise PydanticCustomError(
                "image_distribution",
                "image.distribution: a local stack has no registry; its image is streamed into each "
                "host (ssh): remove the key or set it to ssh",
            )
        return self

    @property
    def runs_image(self) -> bool:
        """Every stack but a local one on the process runtime (its hosts run the venv, not the image)."""
        return self.provisioner != "local" or self.local.runtime == "docker"

    @property
    def distribution(self) -> Literal["registry", "ssh"]:
        """How hosts get the image (image.distribution, defaulting by provisioner)."""
        if self.image.distribution is not None:
            return self.image.distribution
        return "ssh" if self.provisioner == "local" else "registry"

    def host(self, name: str) -> HostSpec:
        for host in self.hosts:
            if host.name == name:
                return host
        raise KeyError(name)


def _env_value(value: object) -> object:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, (int, float)):
        return str(value)
    return value


# --- cluster-wide rules: each a small named function yielding (field path, message) ---------

Issue = tuple[str, str]


@dataclass(frozen=True)
class _Cluster:
    """What the per-host rules look up, computed once per spec (so the rules stay linear)."""

    spec: ClusterSpec
    cidr: ipaddress.IPv4Network | ipaddress.IPv6Network
    first_with_name: dict[str, int]
    first_with_address: dict[str, int]
    reserved_hcas: frozenset[str]

    @classmethod
    def of(cls, spec: ClusterSpec) -> _Cluster:
        names: dict[str, int] = {}
        addresses: dict[str, int] = {}
        for index, host in enumerate(spec.hosts):
            names.setdefault(host.name, index)
            addresses.setdefault(host.address, index)
        cidr = ipaddress.ip_network(spec.network.cluster_cidr)
        return cls(spec, cidr, names, addresses, frozenset(spec.network.reserved_hcas))


def _reasons_name_set_keys(spec: ClusterSpec) -> Iterator[Issue]:
    for key in spec.nccl_reasons:
        if key not in spec.nccl:
            yield f"nccl_reasons.{key}", f"gives a reason for {key}, which nccl does not set"


def _unique_host_name(cluster: _Cluster, index: int, host: HostSpec) -> Iterator[Issue]:
    first = cluster.first_with_name[host.name]
    if first != index:
        yield f"hosts[{index}].name", f"duplicate host name {host.name!r} (also hosts[{first}])"


def _unique_address(cluster: _Cluster, index: int, host: HostSpec) -> Iterator[Issue]:
    first = cluster.first_with_address[host.address]
    if first != index:
        yield (
            f"hosts[{index}].address",
            f"host {host.name!r}: address {host.address} is already used by hosts[{first}]",
        )


def _address_in_cluster_network(cluster: _Cluster, index: int, host: HostSpec) -> Iterator[Issue]:
    cidr, address = cluster.cidr, ipaddress.ip_address(host.address)
    if address.version != cidr.version or address not in cidr:
        yield (
            f"hosts[{index}].address",
            f"host {host.name!r}: {host.address} is outside network.cluster_cidr "
            f"{cidr}; use an address in that network or widen cluster_cidr",
        )
    elif address in (cidr.network_address, cidr.broadcast_address) and cidr.prefixlen < 31:
        yield f"hosts[{index}].address", f"host {host.name!r}: {host.address} is not a usable host address"


def _hcas_not_reserved(cluster: _Cluster, index: int, host: HostSpec) -> Iterator[Issue]:
    reserved = sorted(cluster.reserved_hcas.intersection(host.hcas))
    if reserved:
        yield (
            f"hosts[{index}].hcas",
            f"host {host.name!r} lists {', '.join(reserved)}, which network.reserved_hcas keeps "
            "away from NCCL; remove it from one of the two",
        )


def _hcas_need_rdma(cluster: _Cluster, index: int, host: HostSpec) -> Iterator[Issue]:
    if host.hcas and cluster.spec.network.fabric == "ethernet":
        yield f"hosts[{index}].hcas", f"host {host.name!r} lists HCAs but network.fabric is ethernet"


HostRule = Callable[[_Cluster, int, HostSpec], Iterator[Issue]]
HOST_RULES: tuple[HostRule, ...] = (
    _unique_host_name,
    _unique_address,
    _address_in_cluster_network,
    _hcas_not_reserved,
    _hcas_need_rdma,
)


def _every_host(spec: ClusterSpec) -> Iterator[Issue]:
    cluster = _Cluster.of(spec)
    for index, host in enumerate(spec.hosts):
        for rule in HOST_RULES:
            yield from rule(cluster, index, host)


def _distinct_ports(spec: ClusterSpec) -> Iterator[Issue]:
    ports = {
        "ssh.port": spec.ssh.port,
        "ssh.host_port": spec.ssh.host_port,
        "network.rdzv_port": spec.network.rdzv_port,
    }
    if spec.jupyter.enabled:
        ports["jupyter.port"] = spec.jupyter.port
    by_port: dict[int, str] = {}
    for field, port in ports.items():
        if port in by_port:
            yield field, f"port {port} collides with {by_port[port]}; pick another port"
        by_port.setdefault(port, field)


def _ancestors(path: str) -> Iterator[str]:
    """``/a/b/c`` -> ``/a/b``, ``/a`` (the paths are clean, absolute and not /)."""
    while (path := posixpath.dirname(path)) != "/":
        yield path


def _shares_apart(spec: ClusterSpec) -> Iterator[Issue]:
    """Share names are unique; no mount is another's or nested in it (linear: no pairwise scan)."""
    first_with_name: dict[str, int] = {}
    with_mount: dict[str, list[int]] = {}  # earlier shares by mount
    below: dict[str, list[int]] = {}  # earlier shares by each folder above their mount
    for index, share in enumerate(spec.nas):
        if share.name in first_with_name:
            yield f"nas[{index}].name", f"duplicate share name {share.name!r}"
        first_with_name.setdefault(share.name, index)
        clashes = [(other, "same") for other in with_mount.get(share.mount, [])]
        clashes += [
            (other, "nested") for above in _ancestors(share.mount) for other in with_mount.get(above, [])
        ]
        clashes += [(other, "nested") for other in below.get(share.mount, [])]
        for other, kind in sorted(clashes):
            mount = spec.nas[other].mount
            if kind == "same":
                yield f"nas[{index}].mount", f"{share.mount} is also the mount of nas[{other}]"
            else:
                yield (
                    f"nas[{index}].mount",
                    f"{share.mount} is nested with {mount} (nas[{other}]); give each share its own top-level path",
                )
        with_mount.setdefault(share.mount, []).append(index)
        for above in _ancestors(share.mount):
            below.setdefault(above, []).append(index)


def _min_hosts_fits(spec: ClusterSpec) -> Iterator[Issue]:
    training = spec.training
    if training.min_hosts is None:
        return
    if training.min_hosts > len(spec.hosts):
        yield (
            "training.min_hosts",
            f"is {training.min_hosts}, but the cluster has {len(spec.hosts)} hosts; use at most "
            f"{len(spec.hosts)}",
        )
    elif training.min_hosts < len(spec.hosts) and training.max_restarts < 1:
        yield (
            "training.min_hosts",
            f"is {training.min_hosts} (fewer than the {len(spec.hosts)} hosts), which needs "
            "training.max_restarts >= 1: re-forming the job on the survivors is a torchrun restart",
        )


CLUSTER_RULES: tuple[Callable[[ClusterSpec], Iterator[Issue]], ...] = (
    _reasons_name_set_keys,
    _every_host,
    _distinct_ports,
    _shares_apart,
    _min_hosts_fits,
)


def _cluster_rule_issues(spec: ClusterSpec) -> list[Issue]:
    """Rules that span fields, each as (field path, message), in the order of CLUSTER_RULES."""
    return [issue for rule in CLUSTER_RULES for issue in rule(spec)]
