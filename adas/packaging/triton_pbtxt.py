"""The text of Triton's ``config.pbtxt`` (protobuf text format), one fragment per function."""

from __future__ import annotations

import json
from collections.abc import Sequence


def quoted(s: str) -> str:
    return json.dumps(s)  # a JSON string literal is a valid protobuf text-format string


def dims_text(dims: Sequence[int]) -> str:
    return "[ " + ", ".join(str(int(d)) for d in dims) + " ]"


def tensor_entry(name: str, dtype: str, dims: Sequence[int], reshape: Sequence[int] | None = None) -> str:
    """One input or output; ``reshape``: the shape the model itself sees (``[]`` lets a batched
    model take or give a plain ``[batch]`` vector, declared as ``dims: [1]``)."""
    extra = f" reshape: {{ shape: {dims_text(reshape)} }}" if reshape is not None else ""
    return f"  {{ name: {quoted(name)} data_type: {dtype} dims: {dims_text(dims)}{extra} }}"


def tensor_list(kind: str, items: Sequence[str]) -> str:
    return f"{kind} [\n" + ",\n".join(items) + "\n]\n"


def parameters_text(params: dict[str, str]) -> str:
    return "".join(
        f"parameters {{ key: {quoted(k)} value: {{ string_value: {quoted(v)} }} }}\n"
        for k, v in params.items()
    )


def instance_group(gpu: bool, count: int, gpus: Sequence[int]) -> str:
    if gpu:
        return f"instance_group [ {{ kind: KIND_GPU count: {count} gpus: {dims_text(gpus)} }} ]\n"
    return f"instance_group [ {{ kind: KIND_CPU count: {count} }} ]\n"


def dynamic_batching(max_batch_size: int, max_queue_delay_us: int = 200) -> str:
    preferred = sorted({b for b in (1, 2, 4, 8, 16, 32) if b <= max_batch_size} | {max_batch_size})
    # A short queue delay: batching is for throughput under load, not worth latency at batch 1.
    return (
        f"dynamic_batching {{ preferred_batch_size: {dims_text(preferred)} "
        f"max_queue_delay_microseconds: {int(max_queue_delay_us)} }}\n"
    )


def model_header(name: str, kind_line: str, max_batch_size: int) -> str:
    return f"name: {quoted(name)}\n{kind_line}\nmax_batch_size: {max_batch_size}\n"
