"""Modules written to be compiled (by mypyc, or by Cython), and whether their build runs
(issue #20).

`make install` compiles each module of `COMPILED` (a `.py` for mypyc) and of `CYTHON`
(a `.pyx`) beside its source (tools/build_compiled.py). The build is optional: a machine without a C compiler (the
container image has none) has no build, and the caller keeps its own interpreter-tuned
code. `load` gives the compiled module only if it is there, imports, and is no older
than its source: a source changed since the last `make install` (an edit, a checkout)
is not stood in for by a build of the old one.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
from importlib.machinery import ExtensionFileLoader
from pathlib import Path
from types import ModuleType

__all__ = ["COMPILED", "CYTHON", "load"]

logger = logging.getLogger(__name__)

#: Modules `make install` compiles with mypyc (their source a `.py`, which also runs uncompiled).
COMPILED = ("adapters.frame_walk",)
#: Modules `make install` compiles with Cython (their source a `.pyx`, C that only runs built).
CYTHON = ("adapters.delta_scan",)


def load(module: str) -> ModuleType | None:
    """The compiled build of `module` if it is there, current and imports; else None."""
    spec = importlib.util.find_spec(module)
    if spec is None or not isinstance(spec.loader, ExtensionFileLoader) or spec.origin is None:
        return None  # not built: the usual case without a C compiler
    built = Path(spec.origin)
    name = module.rpartition(".")[2]
    source = built.with_name(name + ".pyx") if module in CYTHON else built.with_name(name + ".py")
    try:
        stale = source.stat().st_mtime > built.stat().st_mtime
    except OSError:
        stale = False
    if stale:
        logger.warning("%s is older than %s: not used (run `make install` to rebuild it)", built.name, source.name)
        return None
    try:
        return importlib.import_module(module)
    except ImportError as exc:  # built for another interpreter, or broken
        logger.warning("%s did not load, its source's fallback runs: %s", built.name, exc)
        return None
