"""Who owns each asset group: the ``owners`` the UI shows on every asset (the one place these
team names are written; assets use the per-group lists)."""

DATA = "team:data"
ML_PLATFORM = "team:ml-platform"
PERCEPTION_EVAL = "team:perception-eval"

INTAKE_OWNERS = [DATA]  # target catalog, golden data, candidate and production bundles
PACKAGING_OWNERS = [ML_PLATFORM]  # staging, export, engines, Triton repositories, model packs
REGISTRY_OWNERS = [ML_PLATFORM]  # registry entries and the production alias
EVALUATION_OWNERS = [PERCEPTION_EVAL]  # eval reports, quantization sensitivity, regression gates
SIMULATION_OWNERS = [PERCEPTION_EVAL]  # replay, scenario library, closed loop, sim verdict

__all__ = [
    "DATA",
    "EVALUATION_OWNERS",
    "INTAKE_OWNERS",
    "ML_PLATFORM",
    "PACKAGING_OWNERS",
    "PERCEPTION_EVAL",
    "REGISTRY_OWNERS",
    "SIMULATION_OWNERS",
]
