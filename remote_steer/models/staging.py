"""Build a cached checkpoint directory atomically (toys, registry shapes, the embedded real model).

The directory is written to a temporary sibling and renamed into place, so an
interrupted build never leaves a half-written checkpoint, and two processes that
build the same one at once keep whichever finished first.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from remote_steer.rundir import share_tree


def build_atomically(target: Path, fill: Callable[[Path], None]) -> Path:
    """Call ``fill(staging)`` on a fresh temporary sibling of ``target``, then rename it to
    ``target``; on any error remove the staging directory and re-raise. Returns ``target``."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
    try:
        fill(staging)
        share_tree(staging)  # mkdtemp makes it 0700 and safetensors its files 0600
        try:
            os.replace(staging, target)
        except OSError:  # another process finished first: keep theirs
            shutil.rmtree(staging, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target
