"""The README's exit-code table, command by command: 0 success, 1 the operation failed, 2 bad input.

Each case runs in a project folder of its own (a Pulumi.yaml in tmp_path), so no
state of a real cluster is read; none needs root or a running cluster.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from gpufleet.cli.main import app
from gpufleet.environment.lockfile import lock_path, write_lock
from gpufleet.inventory import Inventory, InventoryHost, state_dir, write_state
from gpufleet.probe import probe
from gpufleet.spec import parse_spec
from tests.cli.run import run_main
from tests.conftest import PROJECT_ROOT
from tests.environment.sample_locks import sample_lock
from tests.spec.public_keys import ED25519
from tests.spec.test_models import valid_spec

FACTS = PROJECT_ROOT / "tests" / "fixtures" / "hosts"


def _spec(**changes: Any) -> dict[str, Any]:
    spec = copy.deepcopy(valid_spec())
    spec.update(name="exit-codes", provisioner="local")
    spec.update(changes)
    return spec


def _stack(folder: Path, spec: dict[str, Any]) -> str:
    path = folder / "Pulumi.test.yaml"
    path.write_text(yaml.safe_dump({"config": {"gpufleet:cluster": spec}}))
    return str(path)


def _inventory(folder: Path) -> None:
    host = InventoryHost(
        name="gpu-0",
        address="10.10.0.11",
        ssh_address="10.10.0.11",
        ssh_port=2222,
        user="trainer",
        host_key=ED25519,
    )
    write_state(
        state_dir(folder, "exit-codes"),
        Inventory(cluster="exit-codes", provisioner="local", hosts=[host]),
        "key",
    )


def _with_inventory(folder: Path, argv: list[str]) -> list[str]:
    _inventory(folder)
    return argv


def _script(folder: Path) -> str:
    path = folder / "train.py"
    path.write_text("print('hello')\n")
    return str(path)


def _stale_lock(folder: Path) -> list[str]:
    """A stack whose lock was made before ``six`` was declared."""
    stack = _stack(folder, {**_spec(), "image": {**_spec()["image"], "python_packages": ["six"]}})
    write_lock(lock_path(Path(stack)), sample_lock(parse_spec(_spec())))
    return ["-f", stack]


Argv = Callable[[Path], list[str]]
VALID: Argv = lambda f: ["-f", _stack(f, _spec())]  # noqa: E731
MISSING: Argv = lambda f: ["-f", str(f / "missing.yaml")]  # noqa: E731
INVALID: Argv = lambda f: ["-f", _stack(f, _spec(name="Not A Name"))]  # noqa: E731

CASES = [
    # validate
    pytest.param(lambda f: ["validate", *VALID(f)], 0, id="validate-ok"),
    pytest.param(lambda f: ["validate", *INVALID(f)], 2, id="validate-invalid-spec"),
    pytest.param(lambda f: ["validate", *MISSING(f)], 2, id="validate-missing-file"),
    pytest.param(lambda f: ["validate"], 2, id="validate-neither-stack-nor-file"),
    pytest.param(lambda f: ["validate", "--no-such-option"], 2, id="validate-unknown-option"),
    # render
    pytest.param(lambda f: ["validate", *_stale_lock(f)], 2, id="validate-stale-lock"),
    pytest.param(lambda f: ["render", *VALID(f), "--out", str(f / "out")], 0, id="render-ok"),
    pytest.param(lambda f: ["render", *_stale_lock(f), "--out", str(f / "out")], 2, id="render-stale-lock"),
    # lock, build
    pytest.param(lambda f: ["lock", *MISSING(f)], 2, id="lock-missing-file"),
    pytest.param(lambda f: ["lock", *INVALID(f)], 2, id="lock-invalid-spec"),
    pytest.param(lambda f: ["build", *_stale_lock(f)], 2, id="build-stale-lock"),
    pytest.param(lambda f: ["build", *VALID(f), "--push"], 2, id="build-push-local-stack"),
    pytest.param(lambda f: ["up", *_stale_lock(f)], 2, id="up-stale-lock"),
    pytest.param(lambda f: ["render", *INVALID(f), "--out", str(f / "out")], 2, id="render-invalid-spec"),
    pytest.param(lambda f: ["render", *VALID(f)], 2, id="render-without-out"),
    pytest.param(
        lambda f: ["render", *VALID(f), "--out", str(f / "out"), "--facts", str(f)],
        2,
        id="render-facts-missing",
    ),
    pytest.param(
        lambda f: [
            "render",
            "-f",
            _stack(f, _spec(hosts=[_host("dgx-h100-0")])),
            "--out",
            str(f / "o"),
            "--facts",
            str(_facts(f, "dgx-h100-0", "roce-a")),
        ],
        2,
        id="render-facts-contradict-fabric",
    ),
    # inventory (needs the Pulumi CLI: without it, the operation fails)
    pytest.param(lambda f: ["inventory", "--stack", "nope"], 2, id="inventory-unknown-stack"),
    pytest.param(lambda f: ["inventory"], 2, id="inventory-without-stack"),
    # up / down / ssh
    pytest.param(lambda f: ["up", *MISSING(f)], 2, id="up-missing-file"),
    pytest.param(lambda f: ["up", "-f", _stack(f, _spec(provisioner="pulumi"))], 1, id="up-pulumi-stack"),
    pytest.param(lambda f: ["down", *INVALID(f)], 2, id="down-invalid-spec"),
    pytest.param(lambda f: ["ssh", *MISSING(f), "gpu-0"], 2, id="ssh-missing-file"),
    pytest.param(lambda f: ["ssh", *VALID(f), "gpu-0"], 1, id="ssh-no-inventory"),
    pytest.param(lambda f: _with_inventory(f, ["ssh", *VALID(f), "gpu-9"]), 2, id="ssh-unknown-host"),
    # jupyter
    pytest.param(lambda f: ["exec", *MISSING(f), "--", "true"], 2, id="exec-missing-file"),
    pytest.param(lambda f: ["exec", *VALID(f), "--", "true"], 1, id="exec-no-inventory"),
    pytest.param(lambda f: ["exec", *VALID(f), "--hosts", "gpu-9", "--", "true"], 2, id="exec-unknown-host"),
    pytest.param(lambda f: ["jupyter", *MISSING(f), "gpu-0"], 2, id="jupyter-missing-file"),
    pytest.param(lambda f: ["jupyter", *VALID(f), "gpu-0"], 1, id="jupyter-not-enabled"),
    # probe / lint
    pytest.param(
        lambda f: ["probe", "--root", str(FACTS / "roce-a"), "--no-import-torch"], 0, id="probe-recorded"
    ),
    pytest.param(lambda f: ["probe", "--root", str(f / "nowhere")], 2, id="probe-missing-root"),
    pytest.param(lambda f: ["lint", *VALID(f)], 0, id="lint-clean"),
    pytest.param(
        lambda f: ["lint", "-f", _stack(f, _spec(container={"network_mode": "bridge"}))],
        1,
        id="lint-finds-an-error",
    ),
    pytest.param(lambda f: ["lint", *INVALID(f)], 2, id="lint-invalid-spec"),
    pytest.param(
        lambda f: ["lint", *VALID(f), "--facts", str(f / "none")], 2, id="lint-facts-folder-missing"
    ),
    # preflight / train / logs / status / stop: no cluster is up here
    pytest.param(lambda f: ["preflight", *VALID(f)], 1, id="preflight-no-inventory"),
    pytest.param(lambda f: ["preflight", *MISSING(f)], 2, id="preflight-missing-file"),
    pytest.param(lambda f: ["train", *VALID(f), _script(f)], 1, id="train-no-inventory"),
    pytest.param(lambda f: ["train", *VALID(f), str(f / "missing.py")], 2, id="train-missing-script"),
    pytest.param(lambda f: ["train", *INVALID(f), _script(f)], 2, id="train-invalid-spec"),
    pytest.param(lambda f: ["logs", *VALID(f)], 1, id="logs-no-inventory"),
    pytest.param(lambda f: ["logs", *MISSING(f)], 2, id="logs-missing-file"),
    pytest.param(lambda f: ["status", *VALID(f)], 1, id="status-no-inventory"),
    pytest.param(lambda f: ["status", *VALID(f), "--limit", "many"], 2, id="status-bad-limit"),
    pytest.param(lambda f: ["stop", *VALID(f)], 1, id="stop-no-inventory"),
    pytest.param(lambda f: ["stop", *INVALID(f)], 2, id="stop-invalid-spec"),
    # the app itself
    pytest.param(lambda f: ["no-such-command"], 2, id="unknown-command"),
]


def _host(facts: str) -> dict[str, Any]:
    return {"name": facts, "address": "10.10.0.11", "gpus": 8}


def _facts(folder: Path, host: str, recorded: str) -> Path:
    """A facts folder in which ``host`` is the recorded ``recorded`` host (another fabric)."""
    out = folder / "facts"
    out.mkdir()
    (out / f"{host}.json").write_text(json.dumps(probe(FACTS / recorded, import_torch=False)))
    return out


@pytest.mark.parametrize(("argv", "expected"), CASES)
def test_exit_code(
    argv: Argv,
    expected: int,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    (tmp_path / "Pulumi.yaml").write_text("name: exit-codes\nruntime: python\nstackConfigDir: stacks\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", "/usr/bin:/bin")  # no pulumi CLI
    args = argv(tmp_path)
    code, out, err = run_main(args, capsys)
    assert code == expected, f"{args}: {out}{err}"
    assert "Traceback" not in err
    if code != 0:
        assert (out + err).strip(), "a failure says why"


def test_every_command_is_in_the_table() -> None:
    names = {
        command.name or (command.callback.__name__ if command.callback else "")
        for command in app.registered_commands
    }
    covered = {param.id.split("-")[0] for param in CASES if param.id}
    assert names <= covered, f"commands without an exit-code case: {sorted(names - covered)}"
