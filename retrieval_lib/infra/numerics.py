"""Pinned numeric code paths, so that the same seed gives the same figures on any x86-64 CPU with AVX2.

Torch, MKL, oneDNN, NumPy, OpenBLAS and Faiss each pick their kernels by the CPU they run on. An
AVX-512 kernel adds floating-point numbers in another order than an AVX2 one (and NumPy's AVX-512
``argsort`` breaks ties differently), so without pins a training run ends with other weights on
another machine, and a claim that sits near its threshold can flip. Each library reads an
environment variable, once, when it loads; :func:`pin` sets them before anything numeric is imported.

``import retrieval_lib`` calls :func:`pin`, so the package pins itself wherever it is imported first:
the book's notebooks run on a kernel that imports it before anything else
(:mod:`retrieval_lib.infra.kernel`), the test suite loads it as a pytest plugin, and
``python -m retrieval_lib.service`` imports it with its package. A variable that is already set wins
(the tests run tiny chapters on one thread; ``ATEN_CPU_CAPABILITY=default`` shows what a pin is
worth), and ``RETRIEVAL_LIB_UNPINNED=1`` turns every pin off. ``docs/decisions.md`` lists what each pin
changes and what it costs. On other processors (ARM laptops) the variables do nothing: figures there
differ slightly from the book's, with the same conclusions where the book states intervals.
"""

from __future__ import annotations

import os
import sys
import warnings

#: Set to 1 to leave every numeric library on its own choice of kernels (to measure what pinning does).
UNPINNED_ENV = "RETRIEVAL_LIB_UNPINNED"

#: NumPy's dispatch targets above AVX2 (``numpy.core._multiarray_umath.__cpu_dispatch__``), all switched off.
_NUMPY_AVX512 = "AVX512F AVX512CD AVX512_KNL AVX512_KNM AVX512_SKX AVX512_CLX AVX512_CNL AVX512_ICL AVX512_SPR"

#: Every pin: the environment variable, its value, and which library reads it.
PINNED_ENV: dict[str, str] = {
    "ATEN_CPU_CAPABILITY": "avx2",  # torch's own kernels (reductions, softmax, EmbeddingBag, Adam)
    "MKL_CBWR": "AVX2",  # MKL's matrix products inside torch: the AVX2 code path on every CPU
    "ONEDNN_MAX_CPU_ISA": "AVX2",  # oneDNN (torch's mkldnn kernels)
    "NPY_DISABLE_CPU_FEATURES": _NUMPY_AVX512,  # NumPy's ufuncs and sorts (argsort's tie order)
    "OPENBLAS_CORETYPE": "Haswell",  # the OpenBLAS of NumPy, SciPy (gensim's word2vec) and Faiss
    "FAISS_SIMD_LEVEL": "AVX2",  # Faiss's dynamically dispatched distance and top-k kernels
    "OMP_NUM_THREADS": "2",  # torch's intra-op threads: a sum split over threads rounds otherwise
}


def pin() -> None:
    """Set every pinned variable that is not set already (once per process, before numeric imports).

    Warns when NumPy or torch was imported first and runs on other code paths: NumPy chooses its
    kernels when it loads, so the figures may not be the book's.
    """
    if os.environ.get(UNPINNED_ENV) == "1":
        return
    for name, value in PINNED_ENV.items():
        os.environ.setdefault(name, value)
    loaded = [name for name in ("numpy", "torch") if name in sys.modules]
    if loaded and not (_numpy_pinned() and ("torch" not in loaded or _torch_pinned())):
        warnings.warn(f"{' and '.join(loaded)} imported before retrieval_lib, so its kernels are not pinned to "
                      "AVX2 and figures can differ from the book's; import retrieval_lib first", stacklevel=2)


def _torch_pinned() -> bool:
    import torch

    return torch.backends.cpu.get_cpu_capability() == "AVX2"


def _numpy_pinned() -> bool:
    """Whether NumPy dispatches to none of its compiled targets above AVX2.

    Reads the targets NumPy was built with (``__cpu_dispatch__``), not the CPU's features: a feature
    NumPy has no kernels for (``AVX512_SPR`` in NumPy 1.26) stays reported as enabled, can be neither
    disabled nor used, and says nothing about which kernels run.
    """
    from numpy.core._multiarray_umath import __cpu_dispatch__, __cpu_features__

    return not any(__cpu_features__.get(target, False) for target in __cpu_dispatch__
                   if target.startswith("AVX512"))


def pinned() -> bool:
    """Whether this process runs on the pinned code paths.

    True when every variable has its pinned value (the thread count aside: tests choose their own) and
    torch and NumPy run their AVX2 kernels; False on a CPU without AVX2, or after ``import torch`` came
    first.
    """
    same_env = all(os.environ.get(name) == value for name, value in PINNED_ENV.items() if name != "OMP_NUM_THREADS")
    return same_env and _torch_pinned() and _numpy_pinned()


def cpu_name(cpuinfo: str) -> str:
    """The vendor and model of the first processor in ``/proc/cpuinfo``'s text, or ``"unknown"``."""
    fields = {key.strip(): value for key, value in (line.split(":", 1) for line in cpuinfo.splitlines()[:30]
                                                     if ":" in line)}
    name = " ".join(fields.get(key, "").strip() for key in ("vendor_id", "model name")).strip()
    return name or "unknown"


def cpu() -> str:
    """The CPU vendor and model of this machine (:func:`cpu_name` of ``/proc/cpuinfo``, or ``"unknown"``).

    The pins fix the code paths, not the figures across vendors: MKL's AVX2 branch is reproducible on
    Intel CPUs only, and on another vendor MKL dispatches by its own rules, so a training run ends with
    slightly other weights on an AMD CPU than on an Intel one (``docs/decisions.md``, numerics).
    """
    path = "/proc/cpuinfo"
    if not os.path.isfile(path):
        return "unknown"
    with open(path, encoding="utf-8", errors="replace") as handle:
        return cpu_name(handle.read(8192))


def describe() -> dict[str, str]:
    """What this process runs on: the CPU, torch's CPU capability and threads, and every pinned variable."""
    import torch

    return {"cpu": cpu(), "torch.cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "torch.threads": str(torch.get_num_threads()),
            **{name: os.environ.get(name, "(unset)") for name in PINNED_ENV}}
