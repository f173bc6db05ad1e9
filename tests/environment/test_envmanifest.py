import json
from pathlib import Path

from gpufleet.hostscripts import envmanifest


def test_differences_name_each_package_added_removed_or_changed() -> None:
    expected = {"version": 1, "python": {"six": "1.16.0", "torch": "2.13.0"}, "dpkg": {"procps:amd64": "2"}}
    live = {"version": 1, "python": {"torch": "2.13.1", "requests": "2.32.0"}, "dpkg": {"procps:amd64": "2"}}
    assert envmanifest.differences(expected, live) == [
        {"section": "python", "name": "requests", "expected": envmanifest.MISSING, "live": "2.32.0"},
        {"section": "python", "name": "six", "expected": "1.16.0", "live": envmanifest.MISSING},
        {"section": "python", "name": "torch", "expected": "2.13.0", "live": "2.13.1"},
    ]


def test_this_python_checked_against_its_own_manifest_has_no_differences(tmp_path: Path) -> None:
    path = tmp_path / "environment.json"
    assert envmanifest.main(["write", str(path)]) == 0
    written = json.loads(path.read_text())
    assert "pytest" in written["python"] and written["runtime"]["torch"]
    answer = envmanifest.check(str(path), quick=True)
    assert answer["differences"] == []
    assert answer["manifest_digest"] == envmanifest.digest(path.read_bytes())
    assert answer["live_digest"] == envmanifest.quick_digest(written)


def test_a_missing_manifest_is_reported_not_raised(tmp_path: Path) -> None:
    answer = envmanifest.check(str(tmp_path / "none.json"), quick=True)
    assert answer["manifest_digest"] is None and "no manifest" in answer["error"]
