"""The one Jinja2 environment: StrictUndefined, so a missing value is an error,
never an empty string in a config file."""

from __future__ import annotations

import json
from functools import cache

import jinja2


def yaml_quote(value: object) -> str:
    """A YAML double-quoted scalar: JSON strings are valid YAML and escape everything."""
    return json.dumps(str(value), ensure_ascii=False)


@cache
def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        # Package data: found the same way from a checkout and from an installed wheel.
        loader=jinja2.PackageLoader("gpufleet", "templates"),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,  # noqa: S701 - config files, not HTML; values are checked by the spec
    )
    env.filters["q"] = yaml_quote
    return env


def render_template(name: str, **values: object) -> str:
    return environment().get_template(name).render(**values)
