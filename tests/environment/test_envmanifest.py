import json
from pathlib import Path

import pytest

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


def test_an_unchanged_stamp_answers_quick_without_listing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "environment.json"
    envmanifest.main(["write", str(path)])
    monkeypatch.setattr(
        envmanifest, "collect", lambda quick=False: pytest.fail("listed an unchanged environment")
    )
    assert envmanifest.check(str(path), quick=True)["differences"] == []


def test_an_install_changes_the_stamp_and_the_full_listing_names_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = tmp_path / "site-packages"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    path = tmp_path / "environment.json"
    envmanifest.main(["write", str(path)])
    before = envmanifest.stamp()
    info = site / "drifted-1.0.dist-info"  # what `pip install drifted` leaves
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: drifted\nVersion: 1.0\n")
    assert envmanifest.stamp() != before
    answer = envmanifest.check(str(path), quick=True)
    assert answer["differences"] == [
        {"section": "python", "name": "drifted", "expected": envmanifest.MISSING, "live": "1.0"}
    ]
