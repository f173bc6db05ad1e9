"""``gpufleet.probe`` is the host script ``gpufleet/hostscripts/probe.py`` (it runs on hosts).

Importing this module gives that one, so ``gpufleet.probe.X`` and its
``__file__`` (the source shipped to hosts) stay as they were.
"""

from __future__ import annotations

import sys

from gpufleet.hostscripts import probe as _probe
from gpufleet.hostscripts.probe import FACTS_VERSION as FACTS_VERSION
from gpufleet.hostscripts.probe import probe as probe

sys.modules[__name__] = _probe
