"""Where and in what precision the model runs: device (cuda, then mps, then cpu), bf16 or fp32, autocast.

On CPU, bf16 autocast is used only where the processor multiplies bf16 natively (AVX512-BF16 or AMX): there
bf16 matmul ran 4-5x faster than fp32; elsewhere bf16 is emulated and slower than fp32.
"""
from __future__ import annotations

import contextlib
import functools
import platform
from pathlib import Path

import torch

PRECISIONS = ("auto", "bf16", "fp32")


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' was asked for, but no CUDA GPU is visible. Fix: use --device auto or cpu.")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise RuntimeError("device 'mps' was asked for, but MPS is not available. Fix: use --device auto or cpu.")
    return dev


def cpu_has_fast_bf16() -> bool:
    """True where the CPU multiplies bf16 natively (AMX or AVX512-BF16): measured 4x fp32 on these machines."""
    return bool({"amx_bf16", "avx512_bf16"} & set(_cpuinfo().get("flags", "").split()))


def resolve_precision(precision: str, device: torch.device) -> str:
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    if device.type == "cpu":
        return "bf16" if cpu_has_fast_bf16() else "fp32"
    return "fp32"


def use_compile(compile_mode: str, device: torch.device) -> bool:
    """torch.compile on CUDA by default ("auto"); on CPU it measured 0.9x of eager, so only when asked ("on")."""
    return compile_mode == "on" or (compile_mode == "auto" and device.type == "cuda")


def autocast(device: torch.device, precision: str):
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def prepare_device(device: torch.device, num_threads: int | None = None) -> None:
    """Process-wide settings for training on `device`: TF32 matmuls on CUDA, the CPU thread count if given."""
    if num_threads:
        torch.set_num_threads(num_threads)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


# /proc/cpuinfo flags that select the kernels a CPU run takes (oneDNN, MKL and ATen dispatch on them): runs of one
# config are bit-identical on one processor but not across these (measured: `fast` CE seed 0 gave 86.77% on an
# AVX2-only AMD EPYC, 86.63% on an AVX-512 one, 85.61% on a Sapphire Rapids with AMX).
KERNEL_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16")


@functools.cache
def _cpuinfo() -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo ({} where there is none: macOS, Windows), read once."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {}
    fields = {}
    for line in text.split("\n\n", 1)[0].splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    return fields


def processor_of(device_type: str = "cpu") -> dict[str, str]:
    """The processor a run's arithmetic ran on, as two row fields: `processor` (the model, e.g. 'AMD EPYC
    (AuthenticAMD family 25 model 17)', or the GPU's name) and `isa` (what selects its kernels: the CPU's
    KERNEL_FLAGS and torch's CPU capability, e.g. 'avx2 avx512f avx512_bf16; torch AVX512'; for a GPU its
    compute capability). Two rows of one run id agree bit for bit only when both fields agree."""
    return dict(_processor(device_type))  # a copy: callers spread it into rows


@functools.cache
def _processor(device_type: str) -> dict[str, str]:
    if device_type == "cuda" and torch.cuda.is_available():
        major, minor = torch.cuda.get_device_capability()
        return {"processor": torch.cuda.get_device_name(), "isa": f"sm_{major}{minor}; CUDA {torch.version.cuda}"}
    info = _cpuinfo()
    model = info.get("model name") or platform.processor() or platform.machine()
    vendor = " ".join(x for x in (info.get("vendor_id"), f"family {info['cpu family']}" if "cpu family" in info
                                  else "", f"model {info['model']}" if "model" in info else "") if x)
    flags = set(info.get("flags", "").split())
    isa = " ".join(f for f in KERNEL_FLAGS if f in flags) or platform.machine()
    capability = getattr(torch.backends.cpu, "get_cpu_capability", lambda: "unknown")()
    return {"processor": f"{model} ({vendor})" if vendor else model, "isa": f"{isa}; torch {capability}"}


def environment(device: torch.device, precision: str) -> dict:
    """What a result was computed on, recorded beside it."""
    env = {"device": device.type, "precision": precision, "torch_version": torch.__version__,
           "python": platform.python_version(), "platform": platform.platform(), "threads": torch.get_num_threads(),
           "machine": platform.machine(), **processor_of(device.type)}
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    return env
