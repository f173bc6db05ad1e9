"""gpufleet as a package: every import is a declared dependency, and the wheel works on its own.

The wheel test builds a wheel from a copy of the sources (no build folder in the
checkout), installs it into a fresh venv that sees the project venv's
dependencies but not the checkout, and runs ``gpufleet validate`` and ``render``
from an unrelated folder: the rendered files must be byte-identical to the
checkout's.
"""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import venv
import zipfile
from importlib import metadata
from pathlib import Path

import pytest

from gpufleet.environment.lockfile import lock_path, write_lock
from gpufleet.render import render_cluster, write_tree
from tests.conftest import PROJECT_ROOT, STACKS_DIR, stack_spec
from tests.environment.sample_locks import sample_lock

STACK = "example-ib"


def _declared() -> set[str]:
    project = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]
    return {
        re.split(r"[<>=!~\[; ]", line, maxsplit=1)[0].lower().replace("_", "-")
        for line in project["dependencies"]
    }


def _imported_top_level(files: list[Path]) -> set[str]:
    names = set()
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names) - {"gpufleet", "components", "__future__"}


def test_every_import_is_a_declared_dependency() -> None:
    files = [*(PROJECT_ROOT / "gpufleet").rglob("*.py"), *(PROJECT_ROOT / "components").rglob("*.py")]
    files.append(PROJECT_ROOT / "__main__.py")
    distributions = metadata.packages_distributions()
    declared = _declared()
    undeclared = {}
    for module in sorted(_imported_top_level(files)):
        provided_by = {name.lower().replace("_", "-") for name in distributions.get(module, [module])}
        if not provided_by & declared:
            undeclared[module] = sorted(provided_by)
    assert not undeclared, f"imported but not in [project] dependencies: {undeclared}"


def _build_wheel(folder: Path) -> Path:
    source = folder / "source"
    for name in ("pyproject.toml", "README.md"):
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(PROJECT_ROOT / name, source / name)
    shutil.copytree(
        PROJECT_ROOT / "gpufleet", source / "gpufleet", ignore=shutil.ignore_patterns("__pycache__")
    )
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(folder),
            ".",
        ],
        cwd=source,
        check=True,
        timeout=300,
    )
    (wheel,) = folder.glob("gpufleet-*.whl")
    return wheel


def _fresh_venv(folder: Path, wheel: Path) -> Path:
    """A venv with the wheel installed; it reads the project venv's dependencies, never the checkout."""
    venv.create(folder, with_pip=True)
    python = folder / "bin" / "python"
    site = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    # A plain path entry: the project venv's .pth files (its editable gpufleet) are not processed.
    (site / "project-dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", str(wheel)],
        check=True,
        timeout=300,
    )
    return folder / "bin"


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_the_wheel_validates_and_renders_like_the_checkout(tmp_path: Path) -> None:
    wheel = _build_wheel(tmp_path / "dist")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    assert "gpufleet/templates/Dockerfile.j2" in names and "gpufleet/py.typed" in names
    assert not [name for name in names if name.startswith(("tests/", "components/"))]

    bin_dir = _fresh_venv(tmp_path / "venv", wheel)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    stack = elsewhere / f"Pulumi.{STACK}.yaml"
    shutil.copy(STACKS_DIR / stack.name, stack)
    lock = sample_lock(stack_spec(STACK))  # the base cannot be pulled here: a lock of its shape
    write_lock(lock_path(stack), lock)

    where = subprocess.run(
        [str(bin_dir / "python"), "-c", "import gpufleet; print(gpufleet.__file__)"],
        cwd=elsewhere,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert where.startswith(str(tmp_path / "venv")), f"gpufleet imported from {where}, not the wheel"

    gpufleet = str(bin_dir / "gpufleet")
    validated = subprocess.run(
        [gpufleet, "validate", "-f", stack.name], cwd=elsewhere, capture_output=True, text=True, check=False
    )
    assert validated.returncode == 0, validated.stderr
    rendered = subprocess.run(
        [gpufleet, "render", "-f", stack.name, "--out", "out"],
        cwd=elsewhere,
        capture_output=True,
        text=True,
        check=False,
    )
    assert rendered.returncode == 0, rendered.stderr

    expected = tmp_path / "checkout"
    write_tree(render_cluster(stack_spec(STACK), lock=lock, lock_name=lock_path(stack).name), expected)
    assert (
        expected / "gpufleet-env" / "envmanifest.py"
    ).is_file()  # the image's files came from the wheel too
    ours = {p.relative_to(expected): p.read_bytes() for p in expected.rglob("*") if p.is_file()}
    theirs = {
        p.relative_to(elsewhere / "out"): p.read_bytes()
        for p in (elsewhere / "out").rglob("*")
        if p.is_file()
    }
    assert sorted(theirs) == sorted(ours)
    assert [name for name in ours if ours[name] != theirs[name]] == []
