"""Promotion plans and their execution (the rollout step of a promotion).

A :class:`PromotionPlan` is the strategy (shadow, canary 1% -> 5% -> 25% -> 100% with bake
times, or A/B by cohort) plus the analysis that guards every step. The same plan is:

* executed for real on one machine by :class:`LocalRollout`: the production and candidate
  packs' Triton repositories on two real Triton servers behind Debian's nginx (weighted split
  regenerated and reloaded per step), driven by replayed recorded requests; and
* rendered for production as an Argo Rollouts ``Rollout`` + ``AnalysisTemplate``
  (:func:`render_argo_rollout`) and as an AWS SageMaker endpoint deployment
  (:func:`render_sagemaker_deployment`: variants, traffic steps, blue/green update with
  CloudWatch alarms for auto-rollback).

Analysis: every ``interval_s`` the newest candidate samples of the step (spread over the last
``window_s`` when more arrived) are compared with a production baseline over the same period (production's own arm, or, once the candidate serves
most requests, probes sent straight to production under the same load): a one-sided
Mann-Whitney U test of latency plus a minimum effect size, error rate, an optional absolute p95
limit, and candidate-vs-production disagreement (the safety proxy). The interval is ``pass``,
``fail`` (named, with its statistic) or ``inconclusive`` (too few samples). Errors and the
absolute limit roll back at once; a failed comparison rolls back after ``consecutive_breaches``
in a row or ``failure_limit`` in all. A step advances once its bake time is over and its latest
analysis passed; without a verdict it is held for more evidence, at most ``max_extension_s``
past its bake time (then, or at the progress deadline, it rolls back).

Modules: :mod:`.plan` (the plan), :mod:`.analysis` (interval verdicts, the guard, diff
clusters), :mod:`.report` (what a rollout records), :mod:`.controller` (the local canary),
:mod:`.argo` and :mod:`.sagemaker` (production renderings), :mod:`.documents` (all renderings
of a plan as files).
"""
