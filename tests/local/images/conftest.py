"""Real builds share one image of the local stack (built, or found in the machine's cache, once)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from gpufleet.local import images
from tests.conftest import needs_root, stack_spec


def real(test: Callable[..., None]) -> Callable[..., None]:
    """Root with debootstrap and dockerd; slow (a cold cache builds the base and the image: ~4 min)."""
    for mark in (needs_root("debootstrap", "dockerd"), pytest.mark.slow, pytest.mark.timeout(1500)):
        test = mark(test)
    return test


def quiet(_: str) -> None:
    pass


@pytest.fixture(scope="session")
def built() -> tuple[images.LocalImage, list[images.BuildStep]]:
    """The local stack's image (its packages locked once per machine: images.cached_lock)."""
    messages: list[str] = []
    image, steps = images.ensure_image(stack_spec("local"), messages.append)
    assert all(m.startswith(("image: ", "lock: ")) for m in messages), messages
    return image, steps
