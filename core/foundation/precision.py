"""Numeric precision of a run: does this CPU compute bf16 natively, and what `mixed_precision` means here.

`mixed_precision` (a recipe's `train.mixed_precision`) takes three values:
- `no`: float32 everywhere;
- `bf16`: bf16 autocast for training and inference, forced: also on a CPU without native bf16,
  where torch emulates it (correct, slower);
- `auto`: on a GPU bf16 where it has it, else fp16 with loss scaling (training; inference too);
  on a CPU bf16 only when the CPU has native bf16 instructions (`cpu_bf16().native`), else float32.

Why `auto` needs native bf16 on a CPU: without it (AVX2, AVX-512 without its BF16 extension) every
bf16 matrix product is converted to and from float32 around float32 arithmetic, and
benchmarks/precision_cpu.py measured bf16 autocast slower than float32 for training and for
inference on such a CPU (its record, benchmarks/results/precision_cpu.json, holds the numbers and
whether `auto` picked the faster precision on each shape it times). Native means the CPU lists
`avx512_bf16` (AVX-512 BF16: Cooper Lake, Sapphire Rapids, AMD Zen 4 and later) or `amx_bf16`
(Intel AMX tiles, Sapphire Rapids and later) in /proc/cpuinfo, or torch's own CPU probe
(`torch.cpu.get_capabilities()`, cpuinfo-based, also off Linux) reports one of them. oneDNN's
`torch.ops.mkldnn._is_mkldnn_bf16_supported()` is recorded beside them but not used: it is true on
plain AVX-512 too, where oneDNN emulates bf16. Other CPUs (ARM's bf16 extension included) are
treated as without native bf16: not measured here.

`resolve_precision(setting, device)` -> "fp32" | "bf16" | "fp16" is the one rule: the engine
trains with it (core.engine.loop.accelerator_for), the classifier predicts with it
(core.models.classifier), and the run's report, model card and cost ledger record what it gave.
A saved run keeps the setting, not the result, so a run trained with `auto` on a bf16 machine
predicts in float32 on an AVX2 one. `autocast(precision, device)` is the context to run a forward
pass in. Leaves out: fp16 on a CPU (torch's CPU autocast supports it, nothing here measured it),
int8 (the ONNX runtime's quantisation: core.models.onnx_runtime).
"""

from __future__ import annotations

import functools
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path

from core.foundation.errors import UserError

SETTINGS = ("auto", "no", "bf16")  # what `mixed_precision` accepts
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # /proc/cpuinfo flags (and torch.cpu.get_capabilities keys)
CPUINFO = Path("/proc/cpuinfo")
_AUTOCAST_DTYPES = {"bf16": "bfloat16", "fp16": "float16"}


@dataclass(frozen=True)
class CpuBf16:
    """What this CPU offers for bf16: `native` when it lists one of NATIVE_BF16_FLAGS (`flags`);
    `capability` is torch's vector ISA (AVX2, AVX512, ...); `mkldnn_bf16` oneDNN's own check
    (None where torch lacks it), recorded, not used (see the module docstring)."""

    native: bool
    flags: tuple[str, ...]
    capability: str
    mkldnn_bf16: bool | None

    def to_dict(self) -> dict:
        return asdict(self) | {"flags": list(self.flags)}


def cpuinfo_bf16_flags(cpuinfo: str) -> tuple[str, ...]:
    """The NATIVE_BF16_FLAGS that /proc/cpuinfo text lists on its `flags` lines (x86 Linux)."""
    listed = set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            listed.update(value.split())
    return tuple(flag for flag in NATIVE_BF16_FLAGS if flag in listed)


def torch_bf16_flags() -> tuple[str, ...]:
    """The NATIVE_BF16_FLAGS torch's CPU probe reports (`torch.cpu.get_capabilities`, where it exists)."""
    import torch  # lazy: torch costs seconds of start-up, and the CLI imports the config that names SETTINGS

    probe = getattr(torch.cpu, "get_capabilities", None)
    capabilities = probe() if probe is not None else {}
    return tuple(flag for flag in NATIVE_BF16_FLAGS if capabilities.get(flag))


def detect_cpu_bf16(cpuinfo_path: Path = CPUINFO, *, use_torch_probe: bool = True) -> CpuBf16:
    """This CPU's bf16 support: the flags in `cpuinfo_path` (when readable) and, with
    `use_torch_probe`, those torch's probe reports; native when either lists one."""
    import torch  # lazy: see torch_bf16_flags

    try:
        flags = set(cpuinfo_bf16_flags(Path(cpuinfo_path).read_text(errors="replace")))
    except OSError:  # not Linux, or a sandbox without /proc
        flags = set()
    if use_torch_probe:
        flags.update(torch_bf16_flags())
    check = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    ordered = tuple(flag for flag in NATIVE_BF16_FLAGS if flag in flags)
    return CpuBf16(native=bool(ordered), flags=ordered, capability=torch.backends.cpu.get_cpu_capability(),
                   mkldnn_bf16=bool(check()) if check is not None else None)


@functools.lru_cache(maxsize=1)
def cpu_bf16() -> CpuBf16:
    """`detect_cpu_bf16()` of this machine, probed once per process."""
    return detect_cpu_bf16()


def is_cuda(device: str) -> bool:
    return str(device).startswith("cuda")


def resolve_precision(setting: str, device: str, *, native_bf16: bool | None = None) -> str:
    """`mixed_precision` on `device` -> "fp32" | "bf16" | "fp16" (the rule in the module docstring).
    `native_bf16`: whether the CPU has native bf16 (default: `cpu_bf16().native` of this machine)."""
    if setting not in SETTINGS:
        raise UserError(f"bad value for 'mixed_precision': {setting!r}; choose one of {', '.join(SETTINGS)}")
    if setting == "no":
        return "fp32"
    if is_cuda(device):
        import torch  # lazy: see torch_bf16_flags

        if torch.cuda.is_bf16_supported():
            return "bf16"
        if setting == "bf16":
            raise UserError("mixed_precision=bf16 but this GPU has no bf16; use mixed_precision=auto (fp16) or no")
        return "fp16"
    if setting == "bf16":
        return "bf16"
    return "bf16" if (cpu_bf16().native if native_bf16 is None else native_bf16) else "fp32"


def accelerate_name(precision: str) -> str:
    """A resolved precision as accelerate's `mixed_precision` names it ("fp32" -> "no")."""
    return "no" if precision == "fp32" else precision


def autocast(precision: str, device: str) -> AbstractContextManager:
    """The context a forward pass runs in at `precision`: torch's autocast to bf16/fp16 on the
    device's type, or nothing for fp32."""
    if precision not in _AUTOCAST_DTYPES:
        return nullcontext()
    import torch  # lazy: see torch_bf16_flags

    return torch.autocast("cuda" if is_cuda(device) else "cpu", dtype=getattr(torch, _AUTOCAST_DTYPES[precision]))


def precision_section(setting: str, device: str, resolved: str | None = None) -> dict:
    """A run report's `precision`: the setting, what it resolved to on `device` (`resolved`: what the
    model says it computed in, when it knows better than the rule), and (on a CPU) what the CPU offers."""
    resolved = resolve_precision(setting, device) if resolved is None else resolved
    section = {"mixed_precision": setting, "resolved": resolved, "device": str(device)}
    if not is_cuda(device):
        section["cpu_bf16"] = cpu_bf16().to_dict()
    return section
