"""The implementations of the delta walk (`adapters.frame_scan.skip_frames`, issue #20) that
the tests run side by side: the interpreter-tuned loop (the fallback where nothing is
built), and adapters/frame_walk.py, compiled where `make install` built it, else its
source run by the interpreter (so that its logic is tested on every machine).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import adapters
from adapters.compiled import load
from adapters.frame_scan import skip_frames_interpreted

__all__ = ["Walk", "WALKS", "compiled_walk", "source_walk"]

Walk = Callable[[bytes, int, int, bytes, int], tuple[int, int]]


def source_walk() -> ModuleType:
    """adapters/frame_walk.py run by the interpreter, whatever is built beside it."""
    spec = importlib.util.spec_from_file_location("adapters._frame_walk_source",
                                                  Path(adapters.__file__).parent / "frame_walk.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def compiled_walk() -> ModuleType | None:
    return load("adapters.frame_walk")


_compiled = compiled_walk()
#: name → skip_frames: the fallback, and frame_walk (compiled, or its source where not built).
WALKS: dict[str, Walk] = {
    "interpreted": skip_frames_interpreted,
    "compiled" if _compiled is not None else "frame_walk source": (_compiled or source_walk()).skip_frames,
}
