"""Fused CPU kernels for the quantizers, compiled once per machine.

A quantizer call built from PyTorch operators runs six of them in forward
and one in backward, plus two for the Quant-Noise mask, and the folded
weight of a conv-BN layer in training takes about fifteen more. On the
small tensors of TinyML networks each operator costs more in dispatch and
memory traffic than in arithmetic. `csrc/fake_quantize.cpp` does each of
the two jobs in one pass forward and one backward, with the clipped
straight-through gradient in C++, and draws the Quant-Noise decisions from
a counter hash that the backward pass recomputes instead of storing a mask.

The kernels are compiled with the machine's C++ compiler into a cache
folder on first use (`python -m qsearch.quant` does it ahead of time)
and loaded with `torch.ops.load_library`. Where they cannot be built,
or for tensors that are not float32 on the CPU, the quantizers fall back to
their PyTorch operators, which give the same quantized values. Set
QSEARCH_FUSED_KERNELS=0 (or false, no, off) to always use the fallback.
While `torch.compile` or `torch.export` traces a model, the quantizers use
the fallback too, since the kernels have no tracing rules.

A library in the cache is loaded only if its SHA-256 matches the digest
written beside it when it was built. A damaged or foreign file is rebuilt.
Deleting the cache folder forces a rebuild.

Quant-Noise masks differ between the two paths: both are Bernoulli
(noise_prob) per element and reproducible under `torch.manual_seed`, but
drawn differently.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shlex
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)

DISABLE_ENV = "QSEARCH_FUSED_KERNELS"
CACHE_ENV = "QSEARCH_KERNEL_DIR"
SOURCE = Path(__file__).with_name("csrc") / "fake_quantize.cpp"
# Every element is quantized when the decision threshold reaches 2**32.
ALWAYS_QUANTIZE = 2**32
BUILD_TIMEOUT_S = 600

_lock = threading.Lock()
_state: dict[str, Any] = {"loaded": None, "reason": None}


def quantize_below(noise_prob: float) -> int:
    """Return the hash threshold under which an element is quantized: round(p * 2**32)."""
    return min(round(noise_prob * ALWAYS_QUANTIZE), ALWAYS_QUANTIZE)


def cache_dir() -> Path:
    """Return the folder of the compiled kernels: $QSEARCH_KERNEL_DIR, else the user cache."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "qsearch" / "kernels"


def _compile_flags() -> list[str]:
    # OpenMP, as torch's CPU build uses, for at::parallel_for.
    flags = ["-O3", "-std=c++17", "-fPIC", "-shared", "-fopenmp", "-w"]
    flags.append(f"-D_GLIBCXX_USE_CXX11_ABI={int(torch._C._GLIBCXX_USE_CXX11_ABI)}")
    # The library is built on the machine that loads it and named after the
    # instruction set, so a cache folder shared by different CPUs stays safe.
    capability = torch.backends.cpu.get_cpu_capability()
    if capability in ("AVX2", "AVX512"):
        flags += ["-mavx2", "-mfma"]
    if capability == "AVX512":
        flags += ["-mavx512f", "-mavx512dq", "-mavx512vl", "-mavx512bw"]
    return flags


def _library_path(compiler: list[str], flags: list[str]) -> Path:
    key = hashlib.sha256()
    for part in (SOURCE.read_bytes(), torch.__version__.encode(), *compiler, *flags):
        key.update(part if isinstance(part, bytes) else part.encode())
    return cache_dir() / f"fake_quantize-{key.hexdigest()[:16]}.so"


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _intact(library: Path) -> bool:
    # The digest file is written before the library is renamed into place.
    digest = library.with_suffix(".sha256")
    try:
        return digest.read_text().strip() == _digest(library)
    except OSError:
        return False


def build() -> Path:
    """Compile the kernels unless the cache contains them already; return the library's path.

    Each process compiles into a temporary file and renames it into place.
    So workers that start together never wait on a lock that a killed
    process left behind, and at worst two of them compile the same file.
    """
    compiler = shlex.split(os.environ.get("CXX") or "c++")
    if not compiler or shutil.which(compiler[0]) is None:
        program = compiler[0] if compiler else ""
        raise RuntimeError(
            f"no C++ compiler: {program!r} is not on PATH; install g++ or clang++, or set "
            "CXX to a C++17 compiler"
        )
    flags = _compile_flags()
    target = _library_path(compiler, flags)
    if target.exists() and _intact(target):
        return target

    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        return _compile(compiler, flags, target)
    except PermissionError as error:
        raise RuntimeError(
            f"cannot write the kernel cache {target.parent}: {error.strerror}; set "
            f"{CACHE_ENV} to a writable folder"
        ) from error


def _compile(compiler: list[str], flags: list[str], target: Path) -> Path:
    torch_dir = Path(torch.__file__).parent
    log.info("compiling the fused quantizer kernels into %s (once per machine)", target.parent)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        partial = Path(tmp) / target.name
        command = [
            *compiler,
            *flags,
            "-I",
            str(torch_dir / "include"),
            str(SOURCE),
            "-o",
            str(partial),
            "-L",
            str(torch_dir / "lib"),
            "-lc10",
            "-ltorch_cpu",
            f"-Wl,-rpath,{torch_dir / 'lib'}",
        ]
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S, check=False
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"compiling {SOURCE.name} with {shlex.join(compiler)} failed with exit "
                f"status {result.returncode}; set CXX to a C++17 compiler:\n"
                f"{result.stderr.strip()[-2000:]}"
            )
        digest = Path(tmp) / "digest"
        digest.write_text(_digest(partial))
        os.replace(digest, target.with_suffix(".sha256"))
        os.replace(partial, target)
    log.info("compiled the fused quantizer kernels in %.1f s", time.monotonic() - started)
    return target


def turned_off() -> bool:
    """Return whether QSEARCH_FUSED_KERNELS turns the kernels off (0, false, no or off)."""
    return os.environ.get(DISABLE_ENV, "").strip().lower() in ("0", "false", "no", "off")


def _load() -> bool:
    if turned_off():
        _state["reason"] = f"{DISABLE_ENV}={os.environ[DISABLE_ENV]}"
        return False
    try:
        torch.ops.load_library(str(build()))
    except (OSError, RuntimeError, subprocess.SubprocessError) as error:
        # load_library names only the file; the loader's own message is the cause.
        cause = f" ({error.__cause__}); delete {cache_dir()} to rebuild" if error.__cause__ else ""
        _state["reason"] = f"{error}{cause}"
        log.warning(
            "fused quantizer kernels unavailable, using the slower PyTorch operators: %s "
            "(%s=0 turns them off and silences this)",
            _state["reason"],
            DISABLE_ENV,
        )
        return False
    return True


def available() -> bool:
    """Return whether the fused kernels are loaded, building and loading them on first call."""
    if _state["loaded"] is None:
        with _lock:
            if _state["loaded"] is None:
                _state["loaded"] = _load()
    return bool(_state["loaded"])


def unavailable_reason() -> str | None:
    """Return why the kernels are not in use, or None when they are (or were not tried yet)."""
    return _state["reason"]


def applies_to(x: torch.Tensor) -> bool:
    """Return whether the fused kernels can quantize `x`.

    That is float32 on the CPU, outside `torch.compile` and `torch.export`
    tracing, with the kernels loaded.
    """
    return (
        x.dtype == torch.float32
        and x.device.type == "cpu"
        and not torch.compiler.is_compiling()
        and not torch.compiler.is_exporting()
        and available()
    )


def draw_seed() -> int:
    """Draw the seed of one call's Quant-Noise decisions from torch's default generator."""
    return int(torch.randint(ALWAYS_QUANTIZE, (), dtype=torch.int64))


def _decisions(noise_prob: float) -> tuple[int, int]:
    # (below, seed) of one call's Quant-Noise decisions.
    below = quantize_below(noise_prob)
    return below, draw_seed() if below < ALWAYS_QUANTIZE else 0


def fake_quantize(x: torch.Tensor, quantization: Any, noise_prob: float = 1.0) -> torch.Tensor:
    """Quantize `x` (float32 on the CPU) with the fused kernel, each element with `noise_prob`.

    `quantization` is a SymmetricQuantization or PowerOf2Quantization; the
    result carries the clipped straight-through gradient.
    """
    return torch.ops.qsearch.fake_quantize(x, *quantization.kernel_grid, *_decisions(noise_prob))


def fold_weight(
    weight: torch.Tensor,
    gamma: torch.Tensor,
    running_var: torch.Tensor,
    eps: float,
    quantization: Any,
    noise_prob: float = 1.0,
    pow2_scale: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (Q(W * f / s) * s / f, s) for a conv-BN layer in training, in one kernel.

    f = gamma / sqrt(running_var + eps) per output channel, and s is 1, or
    with `pow2_scale` the smallest power of two above max |W * f|. The
    convolution on the result equals the convolution on the quantized folded
    weight divided by f per channel. Gradients reach `weight` and `gamma`.
    """
    return torch.ops.qsearch.fold_weight(
        weight,
        gamma,
        running_var,
        eps,
        pow2_scale,
        *quantization.kernel_grid,
        *_decisions(noise_prob),
    )
