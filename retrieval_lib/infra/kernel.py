"""The book's Jupyter kernel: ipykernel, started after the numeric code paths are pinned.

A notebook imports NumPy and torch before ``retrieval_lib``, too late for the environment variables of
:mod:`retrieval_lib.infra.numerics` to take effect, so the kernel that runs the chapters (in the book
build, the tests and JupyterLab) pins them first: its kernel spec starts ``python -m
retrieval_lib.infra.kernel`` instead of ``python -m ipykernel_launcher``. ``make install`` installs it
with ``python -m retrieval_lib.infra.kernel install``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import retrieval_lib  # noqa: F401  (pins the numeric code paths before ipykernel loads anything)

#: The kernel's name (the chapters' metadata name it) and what JupyterLab shows.
KERNEL_NAME = "python3"
DISPLAY_NAME = "Python 3 (retrieval_lib)"
#: The module the kernel spec starts (this one).
KERNEL_MODULE = "retrieval_lib.infra.kernel"


def install(prefix: str = sys.prefix) -> Path:
    """Install the kernel spec under ``prefix`` (the virtual environment) and return its folder."""
    from ipykernel.kernelspec import install as install_ipykernel

    folder = Path(install_ipykernel(prefix=prefix, kernel_name=KERNEL_NAME, display_name=DISPLAY_NAME))
    spec_file = folder / "kernel.json"
    spec = json.loads(spec_file.read_text())
    spec["argv"] = [sys.executable, "-Xfrozen_modules=off", "-m", KERNEL_MODULE, "-f", "{connection_file}"]
    spec_file.write_text(json.dumps(spec, indent=1) + "\n")
    return folder


def main() -> None:
    """``install``: install the kernel spec; anything else: run the kernel (ipykernel's own arguments)."""
    if sys.argv[1:] == ["install"]:
        print(f"installed kernel {KERNEL_NAME!r} in {install()}")
        return
    from ipykernel import kernelapp

    kernelapp.launch_new_instance()


if __name__ == "__main__":
    main()
