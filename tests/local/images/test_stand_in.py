"""The offline CPU stand-in base: the machine's apt mirror and the recipe that names the base."""

from __future__ import annotations

import pytest

from gpufleet.local.images import stand_in

DEB822 = """\
Types: deb
# http://snapshot.debian.org/archive/debian/20250520T000000Z
URIs: http://mirror.example/debian/
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://mirror.example/debian-security
Suites: bookworm-security
Components: main
"""


def test_mirror_from_deb822_takes_the_suite_itself_not_security() -> None:
    assert stand_in.mirror_from_deb822(DEB822) == "http://mirror.example/debian"
    security_first = DEB822.split("\n\n")[1] + "\n\n" + DEB822.split("\n\n")[0]
    assert stand_in.mirror_from_deb822(security_first) == "http://mirror.example/debian"


def test_mirror_from_deb822_skips_disabled_and_source_stanzas() -> None:
    text = (
        "Types: deb-src\nURIs: http://src.example/debian\nSuites: bookworm\n\n"
        "Enabled: no\nTypes: deb\nURIs: http://off.example/debian\nSuites: bookworm\n\n"
        "Types: deb\nURIs: http://on.example/debian\nSuites: bookworm\n"
    )
    assert stand_in.mirror_from_deb822(text) == "http://on.example/debian"


def test_mirror_from_deb822_ignores_an_inline_key() -> None:
    text = (
        "Types: deb\nURIs: http://a.example/debian\nSuites: bookworm\nSigned-By:\n"
        " -----BEGIN PGP PUBLIC KEY BLOCK-----\n URIs: http://not-this\n .\n"
    )
    assert stand_in.mirror_from_deb822(text) == "http://a.example/debian"


def test_mirror_from_sources_list() -> None:
    text = (
        "# deb http://commented.example/debian bookworm main\n"
        "deb-src http://src.example/debian bookworm main\n"
        "deb http://security.example/debian-security bookworm-security main\n"
        "deb [arch=amd64 signed-by=/usr/share/keyrings/k.gpg] http://one.example/debian/ bookworm main\n"
    )
    assert stand_in.mirror_from_sources_list(text) == "http://one.example/debian"


def test_apt_mirror_prefers_deb822_then_sources_list_then_deb_debian_org() -> None:
    one_line = "deb http://one.example/debian bookworm main\n"
    assert stand_in.apt_mirror(DEB822, one_line) == "http://mirror.example/debian"
    assert stand_in.apt_mirror(None, one_line) == "http://one.example/debian"
    assert (
        stand_in.apt_mirror("Types: deb\nURIs: http://x\nSuites: trixie\n", None) == stand_in.FALLBACK_MIRROR
    )
    assert stand_in.apt_mirror(None, None) == "http://deb.debian.org/debian"


def recipe(**changes: object) -> stand_in.BaseRecipe:
    values: dict[str, object] = {
        "mirror": "http://mirror.example/debian",
        "torch": "2.13.0+cpu",
        "numpy": "2.4.6",
        "ca_certificates": (("proxy.crt", b"-----BEGIN CERTIFICATE-----\n"),),
        "apt_files": (("sources.list.d/debian.sources", DEB822.encode()),),
    }
    values.update(changes)
    return stand_in.BaseRecipe(**values)  # type: ignore[arg-type]


def test_recipe_hash_is_stable_and_names_the_base() -> None:
    assert recipe().digest == recipe().digest
    assert len(recipe().digest) == 64
    assert recipe().tag == f"gpufleet/cpu-base:{recipe().digest[:12]}"


@pytest.mark.parametrize(
    "change",
    [
        {"mirror": "http://other.example/debian"},
        {"torch": "2.14.0+cpu"},
        {"numpy": "2.4.5"},
        {"ca_certificates": (("proxy.crt", b"another certificate"),)},
        {"ca_certificates": ()},
        {"apt_files": ()},
        {"suite": "trixie"},
        {"packages": ("ca-certificates", "python3")},
        {"version": stand_in.RECIPE_VERSION + 1},
    ],
)
def test_every_recipe_input_changes_the_hash(change: dict[str, object]) -> None:
    assert recipe(**change).digest != recipe().digest


def test_recipe_hash_ignores_the_order_of_certificates() -> None:
    two = ((("a.crt", b"A"), ("b.crt", b"B")), (("b.crt", b"B"), ("a.crt", b"A")))
    assert recipe(ca_certificates=two[0]).digest == recipe(ca_certificates=two[1]).digest


def test_stable_name_says_what_the_base_holds_not_where_it_came_from() -> None:
    assert recipe().stable_name == "gpufleet/cpu-base:py3.11-torch2.13.0_cpu-numpy2.4.6-r1"
    assert recipe(mirror="http://other.example/debian").stable_name == recipe().stable_name
    assert recipe(torch="2.14.0+cpu").stable_name != recipe().stable_name
