"""Image references as one typed value: ``[registry/]repository[:tag][@digest]``.

Docker's grammar (distribution/reference): the repository is lowercase path
components, the tag is ``[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}``, the digest
``sha256:`` + 64 hex. A ``host:port/`` registry prefix is not a tag. Every place
that needs a reference (render, compose, the Pulumi args, the local cache
tag) derives it from this value instead of splicing strings.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
# A first component is a registry only with a '.', a ':port' or as localhost (as Docker decides).
_REGISTRY = r"(?:(?:localhost|[a-zA-Z0-9-]+(?:\.[a-zA-Z0-9-]+)+)(?::[0-9]+)?/|[a-zA-Z0-9-]+:[0-9]+/)"
_REFERENCE_RE = re.compile(
    rf"^(?P<repository>{_REGISTRY}?{_COMPONENT}(?:/{_COMPONENT})*)"
    r"(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}))?"
    r"(?:@(?P<digest>sha256:[0-9a-f]{64}))?$"
)
DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
DEFAULT_TAG = "latest"


class ImageRefError(ValueError):
    """Not an image reference; the message says what a valid one looks like."""


@dataclass(frozen=True, order=True)
class ImageRef:
    repository: str  # "registry.example.com/ml/chatbot-train"
    tag: str | None = None  # "v2.9"
    digest: str | None = None  # "sha256:<64 hex>"

    @classmethod
    def parse(cls, text: str) -> ImageRef:
        match = _REFERENCE_RE.match(text)
        if match is None:
            raise ImageRefError(
                f"{text!r} is not an image reference: lowercase repository path, optional "
                "':tag' and '@sha256:<64 hex>' (e.g. registry.example.com/ml/train:v2.9)"
            )
        return cls(match["repository"], match["tag"], match["digest"])

    def __str__(self) -> str:
        text = self.repository
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text

    @property
    def pull(self) -> str:
        """What a host pulls: ``repository@digest`` when pinned (a tag beside it is ignored by Docker
        anyway), else ``repository:tag`` with Docker's own default tag made explicit."""
        if self.digest:
            return f"{self.repository}@{self.digest}"
        return f"{self.repository}:{self.tag or DEFAULT_TAG}"

    def tagged(self, tag: str) -> ImageRef:
        """The same repository under another tag, without a digest (the local cache's content tags)."""
        return ImageRef(self.repository, tag, None)

    def with_digest(self, digest: str) -> ImageRef:
        if not DIGEST_RE.match(digest):
            raise ImageRefError(f"{digest!r} is not 'sha256:' + 64 lowercase hex digits")
        return replace(self, digest=digest)

    def with_default_tag(self) -> ImageRef:
        """``name`` -> ``name:latest`` (what Docker tags an untagged build as); no digest."""
        return ImageRef(self.repository, self.tag or DEFAULT_TAG, None)

    @property
    def familiar_repository(self) -> str:
        """The repository as ``docker images`` shows it: ``docker.io/library/debian`` -> ``debian``."""
        for prefix in ("docker.io/library/", "index.docker.io/library/", "docker.io/", "index.docker.io/"):
            if self.repository.startswith(prefix):
                return self.repository.removeprefix(prefix)
        return self.repository
