"""Registry and promotion (specification step 18).

* :mod:`.store`: the registry of truth (SQLAlchemy 2; SQLite locally, PostgreSQL in
  production): append-only entries and events, aliases per deployment target that move only
  through recorded events, optimistic concurrency, idempotency keys, point-in-time history.
* :mod:`.governance`: approvals, signatures against a pinned key, SBOM, vulnerability gate or
  written waiver, evaluation and simulation verdicts; every unmet condition listed.
* :mod:`.rollout`: promotion plans (shadow / canary / A/B), step analysis, the local real
  canary (two Triton servers behind nginx), Argo Rollouts and SageMaker renderings.
* :mod:`.finalize`: alias moves, release notes, post-promotion hooks, signed webhooks,
  retention pruning, the read-only IAM policy.
* :mod:`.promotion`: governance -> rollout -> finalize as one resumable promotion.

Nothing here imports Dagster except :mod:`.assets` and :mod:`.resource`.
"""
