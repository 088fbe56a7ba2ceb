"""Registry and promotion (specification step 18). No Dagster here: the Dagster layer
(``adas_assets.registry``, ``jobs.registry``, ``resources.registry``) and the ``adas-registry``
CLI (:mod:`.cli`) both call these modules.

* the registry of truth: :mod:`.schema` (SQLAlchemy 2 tables and the triggers that keep them
  append-only; SQLite locally, PostgreSQL in production) and :mod:`.store` (entries and events,
  aliases per deployment target that move only through recorded events, optimistic
  concurrency, idempotency keys, point-in-time history); :mod:`.models`, :mod:`.config`,
  :mod:`.settings` (which registry, trust file and webhook; one engine per URL);
* registration: :mod:`.entries` (entries from the pipeline's descriptors), :mod:`.model_card`,
  :mod:`.registration` (register, stage, adopt production), :mod:`.approvals`;
* governance: :mod:`.governance` (approvals, the signed manifest against the trusted keys, SBOM,
  vulnerability gate or written waiver, verdicts; every unmet condition listed);
* the rollout: :mod:`.rollout` (plans, analysis, the local real canary, Argo Rollouts and
  SageMaker renderings), :mod:`.nginx` and :mod:`.traffic` (the canary's split and replay
  clients), :mod:`.replay` (the recorded traffic), :mod:`.rollout_step` (a promotion's rollout);
* finalize and broadcast: :mod:`.aliases` (alias transactions), :mod:`.release_notes`,
  :mod:`.hooks` (post-promotion hooks), :mod:`.retention`, :mod:`.webhook` (signed
  notifications), :mod:`.access_policy` (the read-only IAM policy);
* :mod:`.promotion` (governance -> rollout -> finalize as one resumable promotion) and
  :mod:`.production` (promote or roll back on request: the asset's and the CLI's use-case).
"""
