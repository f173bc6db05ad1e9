from pathlib import Path

import pytest

from gpufleet.environment.lockfile import (
    AptLock,
    AptPin,
    Lock,
    LockedBase,
    PythonPin,
    lock_bytes,
    lock_path,
    lock_problem,
    read_lock,
    write_lock,
)
from gpufleet.environment.packages import EnvironmentInputs
from gpufleet.errors import InputError

INPUTS = EnvironmentInputs(
    base="pytorch/pytorch:2.9.0", python_packages=("jupyterlab>=4,<5",), apt_packages=("procps",)
)


def a_lock(**changes: object) -> Lock:
    values: dict[str, object] = {
        "inputs": INPUTS,
        "base": LockedBase(
            reference="pytorch/pytorch:2.9.0", digest="sha256:" + "b" * 64, python="3.11.9", os="ubuntu 22.04"
        ),
        "python": (PythonPin(name="jupyterlab", version="4.5.0", hashes=("sha256:cc",)),),
        "apt": AptLock(
            archive="ubuntu",
            snapshot="20261204T000000Z",
            packages=(AptPin(name="procps", version="2:3.3.17"),),
        ),
    }
    values.update(changes)
    return Lock(**values)  # type: ignore[arg-type]


def test_a_lock_reads_back_to_the_same_bytes(tmp_path: Path) -> None:
    path = tmp_path / "Pulumi.prod.lock"
    write_lock(path, a_lock())
    again = read_lock(path)
    assert again == a_lock()
    assert lock_bytes(again) == path.read_bytes()
    assert path.read_bytes().endswith(b"}\n")


def test_the_lock_sits_next_to_its_stack_file() -> None:
    assert lock_path(Path("stacks/Pulumi.local.yaml")) == Path("stacks/Pulumi.local.lock")


def test_a_base_digest_pins_the_from_line() -> None:
    assert a_lock().base.pinned == "pytorch/pytorch:2.9.0@sha256:" + "b" * 64
    assert LockedBase(reference="gpufleet/cpu-base:x").pinned == "gpufleet/cpu-base:x"


@pytest.mark.parametrize(
    ("inputs", "problem"),
    [
        (INPUTS, None),
        (
            INPUTS.model_copy(update={"python_packages": ("jupyterlab>=4,<5", "transformers")}),
            "python packages changed (+transformers)",
        ),
        (INPUTS.model_copy(update={"apt_packages": ()}), "apt packages changed (-procps)"),
        (
            INPUTS.model_copy(update={"base": "nvcr.io/nvidia/pytorch:25.01"}),
            "it was made for base pytorch/pytorch:2.9.0",
        ),
    ],
    ids=["fits", "python-added", "apt-removed", "other-base"],
)
def test_a_lock_for_other_inputs_says_what_changed(inputs: EnvironmentInputs, problem: str | None) -> None:
    found = lock_problem(a_lock(), inputs)
    assert found == problem if problem is None else found is not None and found.startswith(problem)


def test_a_damaged_lock_is_an_input_error_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "Pulumi.prod.lock"
    path.write_text('{"version": 1}')
    with pytest.raises(InputError, match=r"Pulumi.prod.lock: not a gpufleet lock .*gpufleet lock"):
        read_lock(path)
    assert read_lock(tmp_path / "missing.lock") is None
