"""x86 instruction-set levels of CPU targets and of this host (``/proc/cpuinfo`` flags).

The INT8 recipe and the latency a CPU engine shows both depend on the CPU it runs on: ONNX
Runtime's u8 x s8 kernels without VNNI (``vpmaddubsw``) saturate an int16 intermediate, so an
engine for an AVX2-only target is quantized with 7-bit weights (``reduce_range``), while VNNI
and AMX accumulate in int32 and keep the full 8 bits. A target declares its level in
``config/targets.yaml``; the host's level is read here, so latency is measured only where the
host has the target's instructions.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Literal, get_args

Isa = Literal["avx2", "avx512_vnni", "amx"]
ISA_LEVELS: tuple[Isa, ...] = get_args(Isa)
CPUINFO = Path("/proc/cpuinfo")
# Each level includes the ones below it: a host has a level when it has all these flags.
ISA_FLAGS: dict[Isa, frozenset[str]] = {
    "avx2": frozenset({"avx2"}),
    "avx512_vnni": frozenset({"avx2", "avx512_vnni"}),
    "amx": frozenset({"avx2", "avx512_vnni", "amx_tile", "amx_int8"}),
}


def cpu_flags(cpuinfo_text: str) -> frozenset[str]:
    """The feature flags of the first processor in ``/proc/cpuinfo`` text (``flags`` on x86)."""
    for line in cpuinfo_text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() == "flags":
            return frozenset(value.split())
    return frozenset()


@functools.cache
def host_cpu_flags() -> frozenset[str]:
    """This host's CPU flags (empty where ``/proc/cpuinfo`` is missing or lists none)."""
    try:
        return cpu_flags(CPUINFO.read_text())
    except OSError:
        return frozenset()


def isa_of(flags: frozenset[str]) -> Isa | None:
    """The highest level these flags give (``None``: not even AVX2)."""
    levels = [isa for isa in ISA_LEVELS if ISA_FLAGS[isa] <= flags]
    return levels[-1] if levels else None


def host_isa() -> Isa | None:
    return isa_of(host_cpu_flags())


def has_vnni(isa: Isa | None) -> bool:
    """Whether int8 dot products accumulate in int32 without saturation (VNNI or AMX)."""
    return isa in ("avx512_vnni", "amx")


def missing_isa(required: Isa | None, flags: frozenset[str] | None = None) -> str | None:
    """Why this host cannot stand for a target of level ``required`` (``"host lacks
    avx512_vnni"``), or ``None`` when it can (or the target declares no CPU level)."""
    if required is None:
        return None
    have = host_cpu_flags() if flags is None else flags
    lacking = sorted(ISA_FLAGS[required] - have)
    return f"host lacks {', '.join(lacking)}" if lacking else None


def isa_report(target_isa: Isa | None) -> dict[str, str | None]:
    """The builder's and the target's levels, as recorded beside an engine build (``none``: a
    builder below AVX2)."""
    return {"builder_isa": host_isa() or "none", "target_isa": target_isa}
