"""A damaged inventory is a clear error naming the file and where, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpufleet.errors import GpufleetError
from gpufleet.inventory import INVENTORY_FILE, load_inventory


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        pytest.param(b'{"version": 1,\n "cluster": "c",\n "hosts": [}\n', r"line 3 column 12: not valid JSON", id="json"),
        pytest.param(b'{"cluster": "c", "provisioner": "local", "hosts": [{"name": "a"}]}', r"hosts\.0\.address: Field required", id="fields"),
        pytest.param(b"\xff\xfe garbage", r"not text", id="binary"),
    ],
)  # fmt: skip
def test_a_damaged_inventory_names_the_file_and_the_place(
    tmp_path: Path, content: bytes, needle: str
) -> None:
    (tmp_path / INVENTORY_FILE).write_bytes(content)
    with pytest.raises(GpufleetError, match=needle) as info:
        load_inventory(tmp_path)
    assert str(tmp_path / INVENTORY_FILE) in str(info.value)
    assert "re-run gpufleet up" in str(info.value)
