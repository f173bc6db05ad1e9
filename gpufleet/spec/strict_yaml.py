"""YAML text -> plain data (dict, list, str, int, float, bool, None), refusing what no spec needs.

One pass over the parser's events (libyaml's when installed), building the data
directly. Refused, each with the line and a one-line reason:

- more than one document in the stream;
- nesting deeper than ``MAX_DEPTH`` (a spec nests 6 levels, a stack file 8);
- a mapping key that is not a scalar (a list or mapping as a key);
- a duplicate key (YAML would silently keep the last one);
- any explicit tag outside YAML's core schema (``!!binary``, ``!!python/...``,
  ``!custom``): no tag constructs anything but the core types, so none runs code;
- aliases that expand to more than ``MAX_NODES`` nodes (the "billion laughs"),
  and an alias to a collection that contains it.

Plain scalars resolve like PyYAML's SafeLoader (YAML 1.1 booleans, ints, floats,
null, ``<<`` merge keys), except that timestamps stay strings, as in the core
schema.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml.constructor import SafeConstructor
from yaml.resolver import Resolver

from gpufleet.errors import shown

try:  # libyaml's parser: about 10x faster than the pure-Python one
    from yaml._yaml import CParser as _Parser
except ImportError:  # pragma: no cover - PyYAML built without libyaml
    from yaml.parser import Parser as _PyParser
    from yaml.reader import Reader
    from yaml.scanner import Scanner

    class _Parser(Reader, Scanner, _PyParser):  # type: ignore[no-redef]
        def __init__(self, stream: str) -> None:
            Reader.__init__(self, stream)
            Scanner.__init__(self)
            _PyParser.__init__(self)


MAX_DEPTH = 32
MAX_NODES = 5_000_000

_CORE = "tag:yaml.org,2002:"
STR, INT, FLOAT, BOOL, NULL = (f"{_CORE}{name}" for name in ("str", "int", "float", "bool", "null"))
MAP, SEQ, MERGE = f"{_CORE}map", f"{_CORE}seq", f"{_CORE}merge"
_SCALAR_TAGS = frozenset({STR, INT, FLOAT, BOOL, NULL})

# SafeLoader's implicit resolvers for the core types (and merge keys), without
# timestamps, '=' values and '!'/'&'/'*' "yaml" scalars.
_IMPLICIT: dict[str | None, list[tuple[str, re.Pattern[str]]]] = {}
for _first, _resolvers in Resolver.yaml_implicit_resolvers.items():
    _kept = [(tag, regexp) for tag, regexp in _resolvers if tag in _SCALAR_TAGS or tag == MERGE]
    if _kept:
        _IMPLICIT[_first] = _kept
_PATTERN = {tag: regexp for resolvers in _IMPLICIT.values() for tag, regexp in resolvers}
_CONSTRUCTOR = SafeConstructor()
_CONVERT = {
    NULL: lambda node: None,
    BOOL: _CONSTRUCTOR.construct_yaml_bool,
    INT: _CONSTRUCTOR.construct_yaml_int,
    FLOAT: _CONSTRUCTOR.construct_yaml_float,
}


class YamlProblem(ValueError):
    """Why the text is refused, one line, with the line and column where it applies."""


def _where(event: Any) -> str:
    mark = event.start_mark
    return f"line {mark.line + 1}, column {mark.column + 1}"


def _plain(text: str) -> str:
    """A tag or anchor name for a message: shortened, without repr's quotes."""
    return shown(text, 40)[1:].replace("'", "", 1) if len(text) > 38 else text


def _tag_name(tag: str) -> str:
    return _plain("!!" + tag[len(_CORE) :] if tag.startswith(_CORE) else tag)


def _refuse_tag(event: Any) -> YamlProblem:
    return YamlProblem(
        f"{_where(event)}: the tag {_tag_name(event.tag)} is outside YAML's core schema "
        "(str, int, float, bool, null, map, seq): remove it and write the value plainly"
    )


def _collection_key(event: Any) -> YamlProblem:
    return YamlProblem(
        f"{_where(event)}: a mapping key is a list or mapping; keys must be plain names "
        "(did an indentation or a '?' go astray?)"
    )


_MERGE_KEY = object()


@dataclass
class _Open:
    """A collection being built: its value, and for a mapping the key waiting for its value."""

    value: dict[Any, Any] | list[Any]
    anchor: str | None
    nodes_before: int
    key: Any = None
    key_line: int = 0
    has_key: bool = False
    lines: dict[Any, int] = field(default_factory=dict)
    merges: list[dict[Any, Any]] = field(default_factory=list)


def _scalar(event: Any) -> Any:
    tag, value = event.tag, event.value
    if tag == "!" or (tag is None and not event.implicit[0]):
        return value
    if tag is None:
        for candidate, regexp in _IMPLICIT.get(value[:1] if value else "", ()):
            if regexp.match(value):
                tag = candidate
                break
        else:
            return value
        if tag == MERGE:
            return _MERGE_KEY
    elif tag not in _SCALAR_TAGS:
        raise _refuse_tag(event)
    elif tag != STR and not _PATTERN[tag].match(value):
        raise YamlProblem(f"{_where(event)}: {shown(value)} is not a valid {_tag_name(tag)}")
    if tag == STR:
        return value
    return _CONVERT[tag](yaml.ScalarNode(tag, value))


class _Builder:
    def __init__(self) -> None:
        self.stack: list[_Open] = []
        self.anchors: dict[str, tuple[Any, int, bool]] = {}  # value, node count, is a scalar
        self.open_anchors: set[str] = set()
        self.nodes = 0
        self.root: Any = None
        self.documents = 0

    def add(self, event: Any, value: Any, weight: int, is_scalar: bool) -> None:
        self.nodes += weight
        if self.nodes > MAX_NODES:
            raise YamlProblem(
                f"{_where(event)}: the document expands to more than {MAX_NODES:,} values "
                "(aliases of aliases?); no spec is that large"
            )
        top = self.stack[-1] if self.stack else None
        if value is _MERGE_KEY and not (top is not None and isinstance(top.value, dict) and not top.has_key):
            value = "<<"  # only a key merges
        if top is None:
            self.root = value
        elif isinstance(top.value, list):
            top.value.append(value)
        elif not top.has_key:
            if not is_scalar:
                raise _collection_key(event)
            if value is not _MERGE_KEY and value in top.lines:
                raise YamlProblem(
                    f"{_where(event)}: duplicate key {shown(value)} (first on line {top.lines[value]})"
                )
            top.key, top.key_line, top.has_key = value, event.start_mark.line + 1, True
        else:
            if top.key is _MERGE_KEY:
                self.merge(event, top, value)
            else:
                top.lines[top.key] = top.key_line
                top.value[top.key] = value
            top.has_key = False

    @staticmethod
    def merge(event: Any, top: _Open, value: Any) -> None:
        sources = value if isinstance(value, list) else [value]
        if not all(isinstance(source, dict) for source in sources):
            raise YamlProblem(f"{_where(event)}: a '<<' merge key takes a mapping or a list of mappings")
        top.merges += sources

    def open(self, event: Any, value: dict[Any, Any] | list[Any], tag: str) -> None:
        if event.tag not in (None, "!", tag):
            raise _refuse_tag(event)
        if len(self.stack) >= MAX_DEPTH:
            raise YamlProblem(
                f"{_where(event)}: nested more than {MAX_DEPTH} levels deep; a spec needs at most 8"
            )
        top = self.stack[-1] if self.stack else None
        if top is not None and isinstance(top.value, dict) and not top.has_key:
            raise _collection_key(event)
        if event.anchor is not None:
            self.open_anchors.add(event.anchor)
        self.stack.append(_Open(value, event.anchor, self.nodes))

    def close(self, event: Any) -> None:
        done = self.stack.pop()
        if isinstance(done.value, dict):
            for source in done.merges:
                for key, item in source.items():
                    done.value.setdefault(key, item)
        weight = self.nodes - done.nodes_before + 1
        self.nodes = done.nodes_before
        if done.anchor is not None:
            self.open_anchors.discard(done.anchor)
            self.anchors[done.anchor] = (done.value, weight, False)
        self.add(event, done.value, weight, is_scalar=False)

    def alias(self, event: Any) -> None:
        if event.anchor in self.open_anchors:
            raise YamlProblem(
                f"{_where(event)}: the alias *{_plain(event.anchor)} refers to a collection that contains it"
            )
        if event.anchor not in self.anchors:
            raise YamlProblem(f"{_where(event)}: the alias *{_plain(event.anchor)} has no anchor before it")
        value, weight, is_scalar = self.anchors[event.anchor]
        self.add(event, value, weight, is_scalar)


def load(text: str) -> Any:
    """The one document in ``text`` as plain data (None when empty). Raises YamlProblem or yaml.YAMLError."""
    builder = _Builder()
    parser = _Parser(text)
    try:
        while parser.check_event():
            event = parser.get_event()
            if isinstance(event, yaml.ScalarEvent):
                value = _scalar(event)
                if event.anchor is not None:
                    builder.anchors[event.anchor] = (value, 1, True)
                builder.add(event, value, 1, is_scalar=True)
            elif isinstance(event, yaml.MappingStartEvent):
                builder.open(event, {}, MAP)
            elif isinstance(event, yaml.SequenceStartEvent):
                builder.open(event, [], SEQ)
            elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                builder.close(event)
            elif isinstance(event, yaml.AliasEvent):
                builder.alias(event)
            elif isinstance(event, yaml.DocumentStartEvent):
                builder.documents += 1
                if builder.documents > 1:
                    raise YamlProblem(
                        f"{_where(event)}: a second YAML document starts here; a stack file holds "
                        "one (remove the '---' and what follows, or split the file)"
                    )
    finally:
        dispose = getattr(parser, "dispose", None)
        if dispose is not None:
            dispose()
    return builder.root
