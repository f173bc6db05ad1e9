"""Rewrite the spec reference table in README.md from the spec models."""

from __future__ import annotations

import re
from pathlib import Path

from gpufleet.spec.reference import BEGIN, END, spec_reference

README = Path(__file__).resolve().parents[1] / "README.md"

text = README.read_text()
pattern = re.compile(re.escape(BEGIN) + ".*?" + re.escape(END), re.S)
README.write_text(pattern.sub(lambda _: spec_reference(), text))
print(f"updated {README.name}")
