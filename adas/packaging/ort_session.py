"""ONNX Runtime session options shared by engines, their checks and the latency worker.

No onnx or onnxruntime import at module level: the latency worker measuring torch imports this
module too, and must not load another runtime.
"""

from __future__ import annotations

from typing import Any


def session_options(intra_op_threads: int = 2, optimization: str = "all", dynamic_block_base: int = 0) -> Any:
    """Session options for measured, reproducible CPU inference.

    ``allow_spinning = 0``: ORT's workers otherwise busy-wait between calls and, on a 2-core
    node, steal the cores from whatever else runs (torch in the same process, the next
    request's preprocessing). One inter-op thread: the graph is a single chain.
    ``dynamic_block_base`` > 0: ORT hands each operator's work out in shrinking blocks, so a
    thread slowed by another process's load holds up less of it (``scripts/benchmark_contention.py``).
    """
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = intra_op_threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.add_session_config_entry("session.inter_op.allow_spinning", "0")
    if dynamic_block_base > 0:
        so.add_session_config_entry("session.dynamic_block_base", str(dynamic_block_base))
    so.graph_optimization_level = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[optimization]
    so.log_severity_level = 3
    return so
