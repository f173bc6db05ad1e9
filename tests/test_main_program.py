"""The real __main__.py under Pulumi's mocks, for every shipped stack with provisioner: pulumi.

Pulumi's runtime state is process-global: these tests run serially (pytest's
default) and components.testing.start_mocks resets it before every run.
"""

from __future__ import annotations

import copy
import ipaddress
import json
import re
import shutil
from pathlib import PurePosixPath
from typing import Any

import pulumi
import pytest
import yaml

from components.testing import (
    RUNNER_PRIVATE_KEY,
    SECRET_SIG_KEY,
    ProgramRun,
    fake_ed25519,
    run_program,
)
from gpufleet.environment.lockfile import write_lock
from gpufleet.inventory import Inventory, state_dir
from gpufleet.pulumi_outputs import inventory_from_outputs
from gpufleet.render import render_cluster
from gpufleet.spec import ClusterSpec, parse_spec
from gpufleet.spec.loader import read_stack_config
from tests.conftest import PROJECT_ROOT, SHIPPED_STACKS, STACKS_DIR, stack_spec
from tests.environment.sample_locks import sample_lock

PULUMI_STACKS = [s for s in SHIPPED_STACKS if stack_spec(s).provisioner == "pulumi"]
MIB = 1024**2
CONTAINER = "docker:index/container:Container"
PROVIDER = "pulumi:providers:docker"
COMMAND = "command:remote:Command"

_runs: dict[str, ProgramRun] = {}


def program_run(stack: str) -> ProgramRun:
    """One run per stack, shared by the tests that only read it."""
    if stack not in _runs:
        _runs[stack] = run_program(read_stack_config(STACKS_DIR / f"Pulumi.{stack}.yaml"), stack=stack)
    return _runs[stack]


@pytest.fixture(params=PULUMI_STACKS)
def stack(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def plain(value: Any) -> Any:
    """Inputs with secret wrappers removed (for comparisons, not for secrecy checks)."""
    if isinstance(value, dict):
        if SECRET_SIG_KEY in value:
            return plain(value["value"])
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def compose_service(spec: ClusterSpec, host: str) -> tuple[dict[str, Any], dict[str, Any], dict[str, str]]:
    tree = render_cluster(spec)
    folder = PurePosixPath("hosts", host)
    compose = yaml.safe_load(tree[folder / "docker-compose.yml"])
    nccl = dict(
        line.split("=", 1)
        for line in tree[folder / "nccl.env"].splitlines()
        if line and not line.startswith("#")
    )
    return compose["services"]["train"], compose.get("volumes") or {}, nccl


def test_there_are_pulumi_stacks_to_test() -> None:
    assert len(PULUMI_STACKS) >= 3, PULUMI_STACKS


def test_every_host_gets_its_own_docker_provider_over_ssh(stack: str) -> None:
    spec, run = stack_spec(stack), program_run(stack)
    providers = run.of_type(PROVIDER)
    assert len(providers) == len(spec.hosts)
    for host in spec.hosts:
        name = f"{spec.name}-{host.name}"
        provider = run.named(f"{name}-docker")
        assert provider.inputs["host"].startswith("ssh://")
        for role in ("image", "container"):
            assert f"::{name}-docker::" in run.named(f"{name}-{role}").provider, (stack, host.name, role)
        for share in spec.nas:
            volume = run.named(f"{name}-nas-{share.name}-volume")
            assert f"::{name}-docker::" in volume.provider


def test_docker_ssh_pins_the_spec_host_key(stack: str) -> None:
    spec, run = stack_spec(stack), program_run(stack)
    for host in spec.hosts:
        opts = json.loads(run.named(f"{spec.name}-{host.name}-docker").inputs["sshOpts"])
        assert "StrictHostKeyChecking=yes" in opts
        assert f"KnownHostsCommand=/bin/echo %H {host.host_key}" in opts
        assert opts[opts.index("-i") + 1] == spec.runner.identity_file
        command = plain(run.named(f"{spec.name}-{host.name}-firewall-nftables").inputs)
        assert command["connection"]["hostKey"] == host.host_key


def test_container_matches_the_rendered_compose_service(stack: str) -> None:
    spec, run = stack_spec(stack), program_run(stack)
    for host in spec.hosts:
        name = f"{spec.name}-{host.name}"
        service, volumes, nccl = compose_service(spec, host.name)
        container = plain(run.named(f"{name}-container").inputs)
        where = f"{stack}/{host.name}"
        assert run.named(f"{name}-image").inputs["name"] == service["image"], where
        assert container["name"] == service["container_name"], where
        assert container["hostname"] == service["hostname"], where
        assert container["networkMode"] == service["network_mode"] == "host", where
        assert container["restart"] == service["restart"], where
        assert container["shmSize"] * MIB == service["shm_size"], where
        memlock = service["ulimits"]["memlock"]
        assert container["ulimits"] == [{"name": "memlock", "soft": memlock["soft"], "hard": memlock["hard"]}]
        assert memlock == {"soft": -1, "hard": -1}, where
        assert sorted(
            d["hostPath"] + ":" + d["containerPath"] for d in container.get("devices", [])
        ) == sorted(service.get("devices", [])), where
        assert container.get("capabilities", {}).get("adds", []) == service.get("cap_add", []), where
        env = dict(item.split("=", 1) for item in container["envs"])
        assert env == {**nccl, **service.get("environment", {})}, where
        assert service["env_file"] == ["nccl.env"], where
        [gpus] = service["deploy"]["resources"]["reservations"]["devices"]
        [request] = container["deviceRequests"]
        assert (request["driver"], request["count"], request["capabilities"]) == (
            gpus["driver"],
            gpus["count"],
            gpus["capabilities"],
        ), where
        health = service["healthcheck"]
        assert container["healthcheck"] == {
            "tests": health["test"],
            "interval": health["interval"],
            "timeout": health["timeout"],
            "retries": health["retries"],
            "startPeriod": health["start_period"],
        }, where
        binds = sorted(
            v["target"] for v in service["volumes"] if v["type"] == "bind" and v["source"] != "./peers"
        )
        assert sorted(u["file"] for u in container["uploads"]) == binds, where
        named = [
            (v["source"], v["target"], v["read_only"]) for v in service["volumes"] if v["type"] == "volume"
        ]
        mounted = [v for v in container["volumes"] if "volumeName" in v]
        assert [(v["volumeName"], v["containerPath"], v["readOnly"]) for v in mounted] == named
        [peers] = [v for v in service["volumes"] if v["source"] == "./peers"]
        [host_dir] = [v for v in container["volumes"] if "hostPath" in v]
        assert (host_dir["containerPath"], host_dir["readOnly"]) == (peers["target"], True), where
        for share in spec.nas:
            volume = run.named(f"{name}-nas-{share.name}-volume").inputs
            assert volume["driver"] == volumes[volume["name"]]["driver"] == "local", where
            assert volume["driverOpts"] == volumes[volume["name"]]["driver_opts"], where
        assert "hosts" not in container and "extra_hosts" not in service, f"{where}: peers come from a file"
        assert "ports" not in container, f"{where}: host networking publishes no ports"


def test_rdma_stacks_get_ipc_lock_and_infiniband_and_ethernet_does_not(stack: str) -> None:
    spec, run = stack_spec(stack), program_run(stack)
    for container in run.of_type(CONTAINER):
        devices = [d["hostPath"] for d in container.inputs.get("devices", [])]
        caps = container.inputs.get("capabilities", {}).get("adds", [])
        if spec.network.fabric in ("infiniband", "roce"):
            assert devices == ["/dev/infiniband"] and caps == ["IPC_LOCK"], stack
        else:
            assert devices == [] and caps == [], stack


def test_nfs_options_match_the_spec(stack: str) -> None:
    spec, run = stack_spec(stack), program_run(stack)
    for host in spec.hosts:
        for share in spec.nas:
            opts = run.named(f"{spec.name}-{host.name}-nas-{share.name}-volume").inputs["driverOpts"]
            assert opts["type"] == "nfs"
            assert opts["device"] == f":{share.export}"
            expected = [f"addr={share.server}", *share.options] + (["ro"] if share.read_only else [])
            assert opts["o"].split(",") == expected


def test_firewall_command_carries_exactly_the_rendered_nftables(stack: str) -> None:
    spec, run = stack_spec(stack), program_run(stack)
    tree = render_cluster(spec)
    for host in spec.hosts:
        command = run.named(f"{spec.name}-{host.name}-firewall-nftables").inputs
        assert command["stdin"] == tree[PurePosixPath("hosts", host.name, "nftables.conf")]
        assert "nft -c -f" in command["create"]
        assert command["create"].index("nft -c -f") < command["create"].index('nft -f "$f"')
        assert "delete table inet gpufleet" in command["delete"] and "flush ruleset" not in command["delete"]
        # A changed ruleset must update the command in place: a replacement would run the
        # old command's delete after the new create and leave the host without its table.
        assert "triggers" not in command


def test_container_waits_for_the_firewall(stack: str) -> None:
    spec, run = stack_spec(stack), program_run(stack)
    for host in spec.hosts:
        name = f"{spec.name}-{host.name}"
        depends = run.dependencies[f"{name}-container"]
        assert any(urn.endswith(f"::{name}-firewall-nftables") for urn in depends), depends


def test_outputs_form_an_inventory(stack: str) -> None:
    spec, run = stack_spec(stack), program_run(stack)
    inventory, key = inventory_from_outputs(run.exports)
    assert isinstance(inventory, Inventory)
    assert inventory.cluster == spec.name and inventory.provisioner == "pulumi"
    assert [h.name for h in inventory.hosts] == [h.name for h in spec.hosts]
    for entry, host in zip(inventory.hosts, spec.hosts, strict=True):
        assert entry.address == host.address and entry.ssh_address == host.reach_address
        assert entry.ssh_port == spec.ssh.port and entry.user == spec.ssh.user
        assert entry.host_key == fake_ed25519(f"{spec.name}-keys-host-{host.name}")[0]
    assert key == fake_ed25519(f"{spec.name}-keys-controller")[1]
    assert inventory.image_digest == spec.image.digest
    assert inventory.nccl_env == {host.name: dict(compose_service(spec, host.name)[2]) for host in spec.hosts}


def test_authorized_keys_add_the_controller_key(stack: str) -> None:
    spec, run = stack_spec(stack), program_run(stack)
    controller = fake_ed25519(f"{spec.name}-keys-controller")[0]
    for container in run.of_type(CONTAINER):
        uploads = {u["file"]: u["content"] for u in plain(container.inputs["uploads"])}
        lines = uploads["/etc/gpufleet/mounted/authorized_keys"].splitlines()
        assert lines == [*spec.ssh.authorized_keys, controller]


# --- security invariants -----------------------------------------------------------------


def _unprotected_strings(value: Any, path: str = "") -> list[tuple[str, str]]:
    """Every (path, string) NOT under a Pulumi secret wrapper."""
    if isinstance(value, dict):
        if SECRET_SIG_KEY in value:
            return []
        return [item for k, v in value.items() for item in _unprotected_strings(v, f"{path}.{k}")]
    if isinstance(value, list):
        return [item for i, v in enumerate(value) for item in _unprotected_strings(v, f"{path}[{i}]")]
    return [(path, value)] if isinstance(value, str) else []


def test_no_private_key_or_password_outside_a_secret(stack: str) -> None:
    run = program_run(stack)
    private_bodies = [RUNNER_PRIVATE_KEY.splitlines()[1]] + [
        fake_ed25519(r.name)[1].splitlines()[1] for r in run.of_type("tls:index/privateKey:PrivateKey")
    ]
    for resource in run.resources:
        for path, text in _unprotected_strings(resource.inputs):
            assert "PRIVATE KEY" not in text, f"{resource.name}{path}"
            assert not any(body in text for body in private_bodies), f"{resource.name}{path}"
            assert "password" not in path.lower(), f"{resource.name}{path}"
        # Provider inputs arrive as JSON strings: check them decoded too.
    for name, value in run.exports.items():
        if name not in run.secret_exports:
            text = json.dumps(value)
            assert "PRIVATE KEY" not in text, name
            assert not any(body in text for body in private_bodies), name
    assert "controller_private_key" in run.secret_exports


def test_the_secret_check_can_fail() -> None:
    leaked = {
        "uploads": [{"content": RUNNER_PRIVATE_KEY}],
        "ok": {SECRET_SIG_KEY: "x", "value": "PRIVATE KEY"},
    }
    assert [path for path, _ in _unprotected_strings(leaked)] == [".uploads[0].content"]


def test_no_strict_host_key_checking_no_anywhere(stack: str) -> None:
    run = program_run(stack)
    everything = json.dumps([plain(r.inputs) for r in run.resources]) + json.dumps(run.exports)
    assert not re.search(r"StrictHostKeyChecking[ =]+(no|off|accept-new)", everything, re.IGNORECASE)
    assert "StrictHostKeyChecking=yes" in everything


def _nft_sets(conf: str) -> dict[str, list[str]]:
    sets = {}
    for name, elements in re.findall(r"set (\w+) \{[^}]*elements = \{ ([^}]*) \}", conf):
        sets[name] = [e.strip() for e in elements.split(",")]
    return sets


def test_no_firewall_rule_opens_ssh_beyond_admin_cidrs(stack: str) -> None:
    spec, run = stack_spec(stack), program_run(stack)
    admins = [ipaddress.ip_network(c) for c in spec.ssh.admin_cidrs]
    hosts = {ipaddress.ip_address(h.address) for h in spec.hosts}
    for command in (c for c in run.of_type(COMMAND) if c.name.endswith("-nftables")):
        conf = command.inputs["stdin"]
        sets = _nft_sets(conf)
        for name, elements in sets.items():
            for element in elements:
                if name.startswith("admin"):
                    network = ipaddress.ip_network(element)
                    assert any(network.subnet_of(a) for a in admins if a.version == network.version), element
                else:  # peers: exactly the declared host addresses, ranges of them
                    first, _, last = element.partition("-")
                    low, high = ipaddress.ip_address(first), ipaddress.ip_address(last or first)
                    span = {ipaddress.ip_address(n) for n in range(int(low), int(high) + 1)}
                    assert span <= hosts, element
        for line in conf.splitlines():
            rule = line.strip()
            if rule.endswith("accept") and "dport" in rule:
                assert re.search(r"saddr @admin_v[46] ", rule), f"SSH rule without an admin source: {rule}"
        assert "policy drop" in conf
        if spec.jupyter.enabled:
            assert str(spec.jupyter.port) not in re.findall(r"dport \{([^}]*)\}", conf)[0]


# --- failures -----------------------------------------------------------------------------


def _raw(stack: str) -> dict[str, Any]:
    return copy.deepcopy(read_stack_config(STACKS_DIR / f"Pulumi.{stack}.yaml"))


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        pytest.param(
            lambda raw: raw["hosts"][1].update(address="192.168.9.9"),
            ["cluster.hosts[1].address: host 'gpu-1': 192.168.9.9 is outside network.cluster_cidr"],
            id="cross-field",
        ),
        pytest.param(
            lambda raw: (raw["hosts"][0].update(gpus=-1), raw["ssh"].update(admin_cidrs=["0.0.0.0/0"])),
            ["cluster.ssh: 0.0.0.0/0 opens SSH to the whole internet", "cluster.hosts[0].gpus: "],
            id="two-fields",
        ),
    ],
)
def test_invalid_stack_raises_run_error_with_the_field_path(edit: Any, expected: list[str]) -> None:
    raw = _raw("example-ib")
    edit(raw)
    with pytest.raises(pulumi.RunError) as caught:
        run_program(raw, stack="broken")
    lines = str(caught.value).splitlines()[1:]
    assert len(lines) == len(expected)
    for line, start in zip(lines, expected, strict=True):
        assert line.startswith(f"Pulumi.broken.yaml: {start}"), line


def test_unknown_key_is_a_run_error() -> None:
    raw = _raw("example-roce")
    raw["hosts"][0]["gpu"] = 8
    with pytest.raises(pulumi.RunError, match=r"cluster\.hosts\[0\]\.gpu: unknown key"):
        run_program(raw, stack="typo")


def test_missing_host_key_is_a_run_error() -> None:
    raw = _raw("example-ethernet")
    del raw["hosts"][1]["host_key"]
    with pytest.raises(pulumi.RunError, match=r"cluster\.hosts\[1\]\.host_key: host 'vm-1': is required"):
        run_program(raw, stack="unpinned")


def test_auto_fabric_is_a_run_error() -> None:
    """pulumi up has no probed facts: 'auto' would deploy an RDMA host without /dev/infiniband."""
    raw = _raw("example-ib")
    raw["network"]["fabric"] = "auto"
    with pytest.raises(
        pulumi.RunError, match=r"cluster\.network\.fabric: is 'auto', but 'pulumi up' has no probed"
    ):
        run_program(raw, stack="auto")


def test_local_stack_is_refused() -> None:
    with pytest.raises(pulumi.RunError, match=r"cluster\.provisioner: is 'local'.*gpufleet up --stack local"):
        run_program(_raw("local"), stack="local")


def test_missing_cluster_config_is_a_run_error() -> None:
    with pytest.raises(pulumi.RunError, match="gpufleet:cluster"):
        run_program(None, stack="empty", extra_config={}, runner_private_key=None)


def test_runner_key_is_read_from_identity_file_as_a_secret(tmp_path: Any) -> None:
    key_file = tmp_path / "runner_key"
    key_file.write_text(RUNNER_PRIVATE_KEY)
    raw = _raw("example-ethernet")
    raw["runner"] = {"identity_file": str(key_file)}
    run = run_program(raw, stack="keyfile", runner_private_key=None)
    for command in run.of_type(COMMAND):
        assert SECRET_SIG_KEY in command.inputs["connection"]
        assert plain(command.inputs["connection"])["privateKey"] == RUNNER_PRIVATE_KEY
    provider = run.of_type(PROVIDER)[0]
    assert str(key_file) in json.loads(provider.inputs["sshOpts"])


def test_unreadable_identity_file_is_a_run_error(tmp_path: Any) -> None:
    raw = _raw("example-ethernet")
    raw["runner"] = {"identity_file": str(tmp_path / "absent")}
    with pytest.raises(pulumi.RunError, match="runner_private_key"):
        run_program(raw, stack="nokey", runner_private_key=None)


def _build_run(raw: dict[str, Any], lock: bool) -> tuple[Any, dict[str, str]]:
    """The program with build_image on, stack "build", with (or without) stacks/Pulumi.build.lock;
    its run and the build context it rendered (read before it is cleaned up)."""
    lock_file = PROJECT_ROOT / "stacks" / "Pulumi.build.lock"
    folder = state_dir(PROJECT_ROOT, raw["name"]) / "image"
    if lock:  # by hand: the base cannot be pulled here (no registry), so it cannot be resolved
        write_lock(lock_file, sample_lock(parse_spec(raw)))
    try:
        run = run_program(raw, stack="build", extra_config={"gpufleet:build_image": "true"})
        files = {p.relative_to(folder).as_posix(): p.read_text() for p in folder.rglob("*") if p.is_file()}
        return run, files
    finally:  # the program renders the build context into the project's state folder
        shutil.rmtree(state_dir(PROJECT_ROOT, raw["name"]), ignore_errors=True)
        lock_file.unlink(missing_ok=True)


def test_build_image_pushes_once_and_every_host_pulls_its_digest() -> None:
    raw = _raw("example-roce")
    raw["name"] = "pulumi-build-test"
    run, _ = _build_run(raw, lock=True)
    [build] = run.of_type("docker:index/image:Image")
    assert build.inputs["imageName"].startswith("registry.example.com/ml/chatbot-train:gpufleet-")
    assert build.inputs["build"]["dockerfile"].endswith("Dockerfile")
    pulls = {r.inputs["name"] for r in run.of_type("docker:index/remoteImage:RemoteImage")}
    assert len(pulls) == 1
    [pulled] = pulls
    assert pulled.startswith("registry.example.com/ml/chatbot-train@sha256:")
    assert run.exports["image_digest"] == pulled.split("@")[1] != raw["image"]["digest"]


def test_the_built_image_installs_the_stacks_lock() -> None:
    raw = _raw("example-roce")
    raw["name"] = "pulumi-lock-test"
    _, files = _build_run(raw, lock=True)
    assert "--require-hashes" in files["Dockerfile"]
    assert "FROM pytorch/pytorch:2.9.0-cuda12.8-cudnn9-runtime@sha256:" in files["Dockerfile"]
    assert "Installs exactly Pulumi.build.lock" in files["Dockerfile"]
    assert files["gpufleet-env/requirements.lock"].startswith("jupyterlab==1.0.0 \\\n    --hash=sha256:")


def test_building_without_the_stacks_lock_says_how_to_make_it() -> None:
    raw = _raw("example-roce")
    raw["name"] = "pulumi-nolock-test"
    with pytest.raises(pulumi.RunError, match=r"Pulumi\.build\.lock is missing.*gpufleet lock --stack build"):
        _build_run(raw, lock=False)


def test_ssh_distribution_streams_the_image_to_every_host_over_its_pinned_login() -> None:
    raw = _raw("example-ethernet")
    raw["name"] = "pulumi-ssh-test"
    raw["image"] = {"name": "registry.example.com/ml/chatbot-train:v2.9", "distribution": "ssh"}
    spec = parse_spec(raw)
    run = run_program(raw, stack="ssh")
    assert not run.of_type("docker:index/remoteImage:RemoteImage"), "no registry: nothing is pulled"
    streams = run.of_type("command:local:Command")
    assert sorted(s.name for s in streams) == sorted(
        f"{raw['name']}-{h.name}-image-stream" for h in spec.hosts
    )
    for host, stream in zip(spec.hosts, sorted(streams, key=lambda s: s.name), strict=True):
        script = stream.inputs["create"]
        assert "docker save registry.example.com/ml/chatbot-train:v2.9 |" in script
        assert f"KnownHostsCommand=/bin/echo %H {host.host_key}" in script
        assert "StrictHostKeyChecking=yes" in script
        container = run.named(f"{raw['name']}-{host.name}-container")
        assert container.inputs["image"].startswith("sha256:")


def test_ssh_distribution_builds_on_the_runner_without_pushing() -> None:
    raw = _raw("example-roce")
    raw["name"] = "pulumi-ssh-build"
    raw["image"] = {**raw["image"], "distribution": "ssh"}
    raw["image"].pop("digest", None)
    run, _ = _build_run(raw, lock=True)
    [build] = run.of_type("docker:index/image:Image")
    assert build.inputs["skipPush"] is True
    names = {
        s.inputs["create"].split("docker save ")[1].split(" |")[0]
        for s in run.of_type("command:local:Command")
    }
    assert names == {build.inputs["imageName"]}


@pytest.mark.parametrize(
    ("digest", "pulled"),
    [
        (None, "registry.example.com/ml/chatbot-train:v2.9"),
        ("sha256:" + "e" * 64, "registry.example.com/ml/chatbot-train@sha256:" + "e" * 64),
    ],
    ids=["tag", "tag-and-digest"],
)
def test_a_tagged_image_name_reaches_every_host_as_one_reference(digest: str | None, pulled: str) -> None:
    raw = _raw("example-ethernet")
    raw["image"] = {
        "name": "registry.example.com/ml/chatbot-train:v2.9",
        **({"digest": digest} if digest else {}),
    }
    run = run_program(raw, stack="tagged")
    assert {r.inputs["name"] for r in run.of_type("docker:index/remoteImage:RemoteImage")} == {pulled}


def test_every_host_keeps_its_workspace_in_a_volume_that_destroy_leaves() -> None:
    spec = stack_spec("example-ib")
    run = run_program(_raw("example-ib"))
    for host in spec.hosts:
        volume = run.named(f"{spec.name}-{host.name}-workspace")
        assert volume.inputs["name"] == f"{spec.name}-workspace"
        assert volume.name in run.retained, "pulumi destroy must not delete the team's notebooks"
        container = run.named(f"{spec.name}-{host.name}-container")
        mounts = {v["containerPath"]: v.get("volumeName") for v in container.inputs["volumes"]}
        assert mounts["/workspace"] == f"{spec.name}-workspace"
    assert (
        not {r.name for r in run.of_type("docker:index/volume:Volume")}
        - run.retained
        - {r.name for r in run.resources if r.name.endswith("-volume")}
    )


def test_adding_a_host_changes_no_other_hosts_container() -> None:
    raw = _raw("example-ib")
    before = run_program(raw, stack="grow")
    grown = copy.deepcopy(raw)
    fourth = copy.deepcopy(raw["hosts"][-1])
    fourth.update(name="gpu-9", address="10.10.1.99")
    grown["hosts"].append(fourth)
    after = run_program(grown, stack="grow")
    name = raw["name"]
    for host in raw["hosts"]:
        old = before.named(f"{name}-{host['name']}-container").inputs
        new = after.named(f"{name}-{host['name']}-container").inputs
        assert old == new, f"{host['name']}'s container would be replaced"
        peers = after.named(f"{name}-{host['name']}-peers").inputs["stdin"]
        assert "10.10.1.99 gpu-9\n" in peers, "its peers file is updated in place instead"
    assert after.named(f"{name}-gpu-9-container")
