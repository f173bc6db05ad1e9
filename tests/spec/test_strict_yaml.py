"""The strict YAML reader: the same data as PyYAML's SafeLoader for what specs use, refusals for the rest."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from gpufleet.spec.strict_yaml import MAX_DEPTH, MAX_NODES, YamlProblem, load
from tests.conftest import SHIPPED_STACKS, STACKS_DIR


@pytest.mark.parametrize("stack", SHIPPED_STACKS)
def test_shipped_stacks_read_as_safe_load_reads_them(stack: str) -> None:
    text = (STACKS_DIR / f"Pulumi.{stack}.yaml").read_text()
    assert load(text) == yaml.safe_load(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("", None, id="empty"),
        pytest.param("---\n...\n", None, id="empty-document"),
        pytest.param(
            "a: [1, -2, 0x1f, 1_000, 2.5, .inf]", {"a": [1, -2, 31, 1000, 2.5, float("inf")]}, id="numbers"
        ),
        pytest.param(
            "a: [yes, No, true, off, null, ~, '']",
            {"a": [True, False, True, False, None, None, ""]},
            id="bool-null",
        ),
        pytest.param("a: ['1', \"2\", x]", {"a": ["1", "2", "x"]}, id="quoted-stay-strings"),
        pytest.param("a: 2024-01-01", {"a": "2024-01-01"}, id="timestamp-stays-a-string"),
        pytest.param("a: =", {"a": "="}, id="equals-stays-a-string"),
        pytest.param("a: !!str 12\nb: !!int '12'\nc: ! 12", {"a": "12", "b": 12, "c": "12"}, id="core-tags"),
        pytest.param("a: !!map {k: !!seq [1]}", {"a": {"k": [1]}}, id="core-collection-tags"),
        pytest.param(
            "b: &b {k: 1, j: 2}\nc:\n  <<: *b\n  k: 3",
            {"b": {"k": 1, "j": 2}, "c": {"k": 3, "j": 2}},
            id="merge",
        ),
        pytest.param("a: &x [1]\nb: *x", {"a": [1], "b": [1]}, id="alias"),
        pytest.param("a: <<", {"a": "<<"}, id="merge-sign-as-a-value"),
    ],
)
def test_reads(text: str, expected: Any) -> None:
    assert load(text) == expected


TAGS = [
    "!!binary aGVsbG8=",
    "!!python/object/apply:os.system ['true']",
    "!!python/name:os.system",
    "!!set {a, b}",
    "!!omap [a: 1]",
    "!!timestamp 2024-01-01",
    "!custom x",
    "!<tag:example.com,2024:x> y",
]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        *(pytest.param(f"a: {tag}", "outside YAML's core schema", id=tag.split()[0]) for tag in TAGS),
        pytest.param("a: !!int abc", "'abc' is not a valid !!int", id="bad-int"),
        pytest.param("a: !!bool maybe", "is not a valid !!bool", id="bad-bool"),
        pytest.param("a: !!map [1]", "outside YAML's core schema", id="map-tag-on-a-list"),
        pytest.param("a: 1\n---\nb: 2\n", "line 2, column 1: a second YAML document", id="two-documents"),
        pytest.param(
            "[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1), f"more than {MAX_DEPTH} levels", id="deep-flow"
        ),
        pytest.param(
            "".join(f"{' ' * n}k{n}:\n" for n in range(MAX_DEPTH + 1)) + " " * (MAX_DEPTH + 1) + "x",
            f"more than {MAX_DEPTH} levels",
            id="deep-block",
        ),
        pytest.param("? [a, b]\n: 1\n", "a mapping key is a list or mapping", id="list-key"),
        pytest.param("{a: 1}: 1\n", "a mapping key is a list or mapping", id="map-key"),
        pytest.param("x: &k [a]\n*k : 1\n", "a mapping key is a list or mapping", id="alias-list-key"),
        pytest.param(
            "a: 1\nb: 2\na: 3\n", "line 3, column 1: duplicate key 'a' (first on line 1)", id="duplicate"
        ),
        pytest.param("&a [*a]", "refers to a collection that contains it", id="recursive-alias"),
        pytest.param("a: *nowhere", "has no anchor before it", id="undefined-alias"),
        pytest.param("a:\n  <<: [1, 2]\n", "'<<' merge key takes a mapping", id="merge-of-a-list"),
    ],
)
def test_refuses(text: str, expected: str) -> None:
    with pytest.raises(YamlProblem) as caught:
        load(text)
    assert expected in str(caught.value)
    assert "\n" not in str(caught.value)


def test_no_tag_runs_code(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    for text in (
        f"!!python/object/apply:os.system ['touch {marker}']",
        f"a: !!python/object/new:subprocess.Popen [['touch', '{marker}']]",
        "!!python/object/apply:builtins.exec ['import os; os.system(\"touch " + str(marker) + "\")']",
    ):
        with pytest.raises(YamlProblem):
            load(text)
    assert not marker.exists()


def test_an_alias_bomb_is_refused_before_it_expands() -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{n}: &a{n} [{', '.join([f'*a{n - 1}'] * 10)}]" for n in range(1, 9)]
    with pytest.raises(YamlProblem, match=f"more than {MAX_NODES:,} values"):
        load("\n".join(lines))


def test_long_names_are_shortened() -> None:
    with pytest.raises(YamlProblem) as caught:
        load("a: !" + "x" * 1_000_000 + " y")
    assert len(str(caught.value)) < 300 and "1,000,001 characters" in str(caught.value)


def test_syntax_errors_are_pyyaml_errors() -> None:
    with pytest.raises(yaml.YAMLError):
        load("a: [")
