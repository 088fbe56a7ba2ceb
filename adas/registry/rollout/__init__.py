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

Analysis: every ``interval_s`` the newest candidate samples of the step are compared with
production's over the same period: p95 latency (ratio + slack, optional absolute limit),
error rate, and candidate-vs-production disagreement (the safety proxy). The interval is
``pass``, ``fail`` (a breach, named) or ``inconclusive`` (too few samples). ``fail`` for
``consecutive_breaches`` intervals in a row, or ``failure_limit`` failures in all, rolls back;
``inconclusive`` holds the step (pause) and ``inconclusive_limit`` in a row, or the progress
deadline, rolls back. A step advances once its bake time is over and its latest analysis
passed.

Modules: :mod:`.plan` (the plan), :mod:`.analysis` (interval verdicts, the guard, diff
clusters), :mod:`.report` (what a rollout records), :mod:`.controller` (the local canary),
:mod:`.argo` and :mod:`.sagemaker` (production renderings), :mod:`.documents` (all renderings
of a plan as files).
"""
