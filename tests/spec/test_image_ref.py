import pytest

from gpufleet.spec.image_ref import ImageRef, ImageRefError

DIGEST = "sha256:" + "a" * 64


@pytest.mark.parametrize(
    ("text", "repository", "tag", "digest", "pull"),
    [
        ("local/cpu-trainer:dev", "local/cpu-trainer", "dev", None, "local/cpu-trainer:dev"),
        ("pytorch-cuda:v2.9", "pytorch-cuda", "v2.9", None, "pytorch-cuda:v2.9"),
        (
            "registry.example.com/ml/train",
            "registry.example.com/ml/train",
            None,
            None,
            "registry.example.com/ml/train:latest",
        ),
        ("localhost:5000/ml/train:v1", "localhost:5000/ml/train", "v1", None, "localhost:5000/ml/train:v1"),
        (f"ml/train:v1@{DIGEST}", "ml/train", "v1", DIGEST, f"ml/train@{DIGEST}"),
    ],
    ids=["seed-style-tag", "no-registry", "untagged", "registry-port-is-not-a-tag", "digest-wins-for-pull"],
)
def test_references_parse_into_their_parts(
    text: str, repository: str, tag: str | None, digest: str | None, pull: str
) -> None:
    ref = ImageRef.parse(text)
    assert (ref.repository, ref.tag, ref.digest) == (repository, tag, digest)
    assert ref.pull == pull
    assert str(ref) == text


@pytest.mark.parametrize(
    "text",
    [
        "Upper/case",
        "ml/train:",
        "ml/train:v1:v2",
        "ml//train",
        "ml/train@sha256:short",
        ":v1",
        "ml/train:-bad",
    ],
    ids=[
        "uppercase",
        "empty-tag",
        "two-tags",
        "empty-component",
        "short-digest",
        "no-repository",
        "tag-leading-dash",
    ],
)
def test_malformed_references_are_refused_with_an_example(text: str) -> None:
    with pytest.raises(ImageRefError, match=r"e\.g\. registry\.example\.com/ml/train:v2\.9"):
        ImageRef.parse(text)


def test_a_cache_tag_replaces_the_users_tag_instead_of_appending_to_it() -> None:
    # The bug the issue reports: 'local/cpu-trainer:dev' + ':gpufleet-...' is not a reference.
    tagged = ImageRef.parse("local/cpu-trainer:dev").tagged("gpufleet-0123456789ab")
    assert str(tagged) == "local/cpu-trainer:gpufleet-0123456789ab"
    assert ImageRef.parse(str(tagged)) == tagged


def test_with_digest_checks_the_digest() -> None:
    assert ImageRef.parse("ml/train").with_digest(DIGEST).pull == f"ml/train@{DIGEST}"
    with pytest.raises(ImageRefError):
        ImageRef.parse("ml/train").with_digest("sha256:nothex")


@pytest.mark.parametrize(
    ("text", "familiar"),
    [
        ("docker.io/library/debian:12", "debian"),
        ("docker.io/pytorch/pytorch", "pytorch/pytorch"),
        ("pytorch/pytorch:2.9.0", "pytorch/pytorch"),
        ("localhost:5000/ml/train", "localhost:5000/ml/train"),
    ],
    ids=["library", "docker-hub-user", "short", "registry-with-port"],
)
def test_familiar_repository_is_how_docker_lists_it(text: str, familiar: str) -> None:
    assert ImageRef.parse(text).familiar_repository == familiar


def test_with_default_tag_makes_latest_explicit_and_drops_the_digest() -> None:
    assert str(ImageRef.parse("ml/train").with_default_tag()) == "ml/train:latest"
    assert str(ImageRef.parse("ml/train:v2@sha256:" + "a" * 64).with_default_tag()) == "ml/train:v2"
