"""Compile the modules written to be compiled (adapters/compiled.py: COMPILED with mypyc,
CYTHON with Cython) in place: `make install` runs this after pip (issue #20).

Each module is compiled in a scratch directory of its own (its package as an empty
`__init__.py` and the module), so neither the project's pyproject.toml (setuptools
reads it when mypyc or Cython calls `build_ext`) nor its `build/` directory is in the
way, and the extension is moved beside the source only once it is whole. A module
that does not build (no C compiler) is reported and left out: its caller's pure-Python
fallback runs then.
Exit status 1 if any did not build (the Makefile goes on without it).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from adapters.compiled import COMPILED, CYTHON  # noqa: E402  (the project on the path first)


def build(module: str, cython: bool = False) -> bool:
    """Compile `module` (dotted, one package deep) beside its source, with mypyc, or with
    Cython (`cython`: the source is a `.pyx`); whether it built."""
    package, _, name = module.rpartition(".")
    source = ROOT / package / (f"{name}.pyx" if cython else f"{name}.py")
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    compiler = "Cython" if cython else "mypyc"
    command = ([sys.executable, "-m", "Cython.Build.Cythonize", "-i", "-3", f"{package}/{source.name}"] if cython
               else [sys.executable, "-m", "mypyc", f"{package}/{source.name}"])
    with tempfile.TemporaryDirectory(prefix=f"{compiler.lower()}-") as scratch:
        (Path(scratch) / package).mkdir()
        (Path(scratch) / package / "__init__.py").touch()
        shutil.copyfile(source, Path(scratch) / package / source.name)
        done = subprocess.run(command, cwd=scratch, capture_output=True, text=True, check=False)
        built = Path(scratch) / package / f"{name}{suffix}"
        if done.returncode != 0 or not built.exists():
            print(f"{module}: {compiler} did not build it; the pure-Python fallback runs instead\n"
                  f"{done.stdout[-2000:]}{done.stderr[-2000:]}", file=sys.stderr)
            return False
        # mypyc's extension of the module is a shim that loads `<name>__mypyc`, which holds
        # the code: that one is put in place first, the shim last.
        for extension in sorted(built.parent.glob(f"{name}*{suffix}"), key=lambda path: path == built):
            target = source.with_name(extension.name)
            staged = target.with_name(f".{target.name}.new")
            shutil.copyfile(extension, staged)
            os.replace(staged, target)  # a process that has the old one open keeps it
    print(f"{module}: compiled by {compiler} beside {source.relative_to(ROOT)}")
    return True


def main() -> int:
    results = [build(module) for module in COMPILED] + [build(module, cython=True) for module in CYTHON]
    return 0 if all(results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
