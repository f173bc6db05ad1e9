"""Environment parity: envmanifest.py's answers judged (pure); the real drift test is in test_drift.py."""

from __future__ import annotations

import json

import pytest

from gpufleet.hostscripts.envmanifest import MISSING
from gpufleet.launcher.environment import (
    Difference,
    HostEnvironment,
    expected_manifest,
    parity_problems,
    parse_answer,
)
from gpufleet.launcher.preflight import check_environment
from tests.conftest import stack_spec

IMAGE = "sha256:" + "a" * 64
OTHER = "sha256:" + "b" * 64


def answer(manifest: str | None = IMAGE, differences: list[dict[str, str]] | None = None) -> str:
    return json.dumps(
        {"manifest_digest": manifest, "live_digest": "sha256:" + "c" * 64, "differences": differences or []}
    )


SIX_ADDED = {"section": "python", "name": "six", "expected": MISSING, "live": "1.17.0"}
TORCH_CHANGED = {"section": "python", "name": "torch", "expected": "2.13.0+cpu", "live": "2.12.0"}
CURL_REMOVED = {"section": "dpkg", "name": "curl:amd64", "expected": "7.88.1-10", "live": MISSING}


def test_an_answer_is_a_typed_value_with_every_difference() -> None:
    env = parse_answer("node-1", "noise\n" + answer(differences=[SIX_ADDED, TORCH_CHANGED, CURL_REMOVED]))
    assert env.manifest_digest == IMAGE
    assert env.differences[0] == Difference("python", "six", MISSING, "1.17.0")
    assert env.drift_text() == "python: +six 1.17.0, torch 2.13.0+cpu -> 2.12.0; dpkg: -curl:amd64 7.88.1-10"


@pytest.mark.parametrize(
    ("stdout", "stderr", "needle"),
    [
        ("", "python: not found", "no answer (python: not found)"),
        (
            '{"manifest_digest": null, "error": "no manifest at /etc/gpufleet/environment.json"}',
            "",
            "no manifest",
        ),
        ("[1, 2]", "", "no answer"),
    ],
    ids=["no-output", "no-manifest", "not-an-object"],
)
def test_no_answer_is_an_error_never_a_pass(stdout: str, stderr: str, needle: str) -> None:
    env = parse_answer("node-0", stdout, stderr)
    assert env.error is not None and needle in env.error
    assert parity_problems({"node-0": env}, IMAGE) == {"node-0": env.error}


def test_the_expected_manifest_is_the_inventorys_else_the_most_common() -> None:
    envs = {
        name: HostEnvironment(name, digest, None)
        for name, digest in [("a", IMAGE), ("b", IMAGE), ("c", OTHER)]
    }
    assert expected_manifest(envs, None) == IMAGE
    assert expected_manifest(envs, OTHER) == OTHER
    assert expected_manifest({}, None) is None


def test_parity_names_the_drifted_host_and_the_one_on_another_image() -> None:
    envs = {
        "node-0": parse_answer("node-0", answer()),
        "node-1": parse_answer("node-1", answer(differences=[SIX_ADDED])),
        "node-2": parse_answer("node-2", answer(manifest=OTHER)),
    }
    problems = parity_problems(envs, IMAGE)
    assert set(problems) == {"node-1", "node-2"}
    assert problems["node-1"] == "drifted from its image: python: +six 1.17.0"
    assert problems["node-2"].startswith("runs another image (manifest bbbbbbbbbbbb, expected aaaaaaaaaaaa)")
    assert parity_problems({"node-0": envs["node-0"]}, IMAGE) == {}


def test_preflight_fails_a_drifted_host_and_skips_the_process_runtime() -> None:
    spec = stack_spec("local")
    drifted = parse_answer("node-1", answer(differences=[SIX_ADDED]))
    check = check_environment(spec, drifted, IMAGE)
    assert (check.status, check.summary) == ("fail", "1 package(s) drifted")
    assert "+six 1.17.0" in check.detail
    assert check_environment(spec, parse_answer("node-0", answer()), IMAGE).status == "ok"
    assert check_environment(spec, None, IMAGE).status == "fail"
    process = spec.model_copy(update={"local": spec.local.model_copy(update={"runtime": "process"})})
    assert check_environment(process, None, IMAGE).status == "skipped"


def test_images_without_a_manifest_are_unverifiable_not_drifted() -> None:
    missing = '{"manifest_digest": null, "error": "no manifest at /etc/gpufleet/environment.json: [Errno 2]"}'
    envs = {name: parse_answer(name, missing) for name in ("node-0", "node-1")}
    assert parity_problems(envs, None) == {}, "an image built elsewhere does not block train"
    assert set(parity_problems(envs, IMAGE)) == {"node-0", "node-1"}, (
        "but the inventory's manifest is required"
    )
    one_has_it = {**envs, "node-1": parse_answer("node-1", answer())}
    assert set(parity_problems(one_has_it, None)) == {"node-0"}
    spec = stack_spec("local")
    assert check_environment(spec, envs["node-0"], None).status == "warn"
