"""Drive replay and simulation (specification step 17).

Domain modules (no Dagster import): ``replay`` (open-loop replay metrics and divergence flags),
``scenarios`` (flagged intervals -> OpenSCENARIO 1.3 + OpenDRIVE, XSD validation, sweeps),
``closed_loop`` (highway-env episodes with the engine's detections driving a proxy controller),
``metrics`` (safety and comfort metrics, CARLA-style driving score), ``gate`` (per-category
pass criteria), ``orchestration`` (sharded, checkpointed, reproducible sweeps), ``clips`` and
``heatmap`` (triage outputs). ``assets`` is the thin Dagster layer.
"""
