"""Drive replay and simulation (specification step 17); domain code, no Dagster import.

Use-cases (one per asset of ``adas_assets.simulation``, each returning a typed result):
``replay_metrics``, ``scenario_library``, ``closed_loop_simulation``, ``sim_verdict``; what they
share is in ``steps`` (cell checks, code versions, stored outputs), what they hand downstream in
``refs``.

Open-loop replay: ``replay`` (metrics and divergence flags) with its result types in
``replay_report``. Scenario library: ``scenario_templates`` (what a scenario is, classification),
``scenarios`` (OpenSCENARIO 1.3 + OpenDRIVE writing), ``scenario_schema`` (XSD validation),
``scenario_sweeps`` (sweeps -> runs). Closed loop: ``episode`` (a run and its trace as data),
``perception`` (engine, oracle, faults), ``controller`` (tracker and proxy controller),
``world`` (highway-env, scripted actors), ``closed_loop`` (the step loop), ``metrics``,
``gate``, ``clips`` and ``heatmap``. Sweeps: ``planning``, ``shards`` (a shard and its
checkpoint), ``executors`` (local processes or pods), ``sweep`` (``run_sweep``) and
``orchestration``, the shard command a Kubernetes pod runs
(``python -m adas.simulation.orchestration``). ``config`` reads ``config/simulation.yaml``.
"""
