"""The local runtime's images, built offline and cached by content.

No image registry is reachable from a local machine, so images are made here,
in one private build daemon whose data-root IS the image cache. By concern:

- cache.py: where the cache lives, what it holds, one builder at a time;
- steps.py: running a build step (a pipeline, its log, progress);
- builder.py: the build daemon;
- stand_in.py: the offline CPU base for stacks without image.base;
- base.py: the effective base (the stand-in, or image.base);
- locking.py: `gpufleet lock` inside that base;
- training.py: the training image from the rendered, locked context;
- distribution.py: an image into a host's own daemon.

Each image is rebuilt only when its inputs change; a machine-wide lock
serialises builds and loads between concurrent callers.
"""

from gpufleet.local.images.cache import CACHE_ENV, BuildStep, LocalImage, cache_dir
from gpufleet.local.images.distribution import load_into
from gpufleet.local.images.locking import cached_lock, lock_image
from gpufleet.local.images.steps import Progress
from gpufleet.local.images.training import ensure_image

__all__ = [
    "CACHE_ENV",
    "BuildStep",
    "LocalImage",
    "Progress",
    "cache_dir",
    "cached_lock",
    "ensure_image",
    "load_into",
    "lock_image",
]
