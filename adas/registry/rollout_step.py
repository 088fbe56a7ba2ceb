"""The rollout step of a promotion: the plan rendered for production controllers and stored,
both Triton model repositories deployed (pulled by their pinned digests and verified,
:mod:`adas.registry.deploy`), the local canary run
on the recorded traffic, and each attempt and step recorded as a registry event.

A crashed attempt is simply run again (its servers died with it; production never moved):
attempt ``n`` records ``<key>:rollout:<n>``.
"""

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from adas.registry.access_policy import artifact_location
from adas.registry.deploy import deploy_entry
from adas.registry.models import Entry, RegistryError
from adas.registry.replay import Traffic
from adas.registry.rollout.controller import LocalRollout, ProgressCallback
from adas.registry.rollout.documents import plan_documents
from adas.registry.rollout.plan import PromotionPlan
from adas.registry.rollout.report import RolloutReport
from adas.registry.settings import PromotionSettings

RolloutRunner = Callable[[PromotionPlan, Path, Path, Traffic, ProgressCallback], RolloutReport]
# record(kind, idempotency key, reason, payload): one event of the promotion
Recorder = Callable[..., None]


def local_runner(settings: PromotionSettings) -> RolloutRunner:
    """Runs the plan for real on this machine (:class:`LocalRollout`), sized by the policy."""

    def run(
        plan: PromotionPlan,
        production: Path,
        candidate: Path,
        traffic: Traffic,
        progress: ProgressCallback,
    ) -> RolloutReport:
        local = settings.policy.rollout.local
        frames = traffic.frames[: local.max_frames]
        return LocalRollout(
            plan,
            production_repository=production,
            candidate_repository=candidate,
            frames=frames,
            frame_meta=traffic.meta[: local.max_frames],
            concurrency=local.concurrency,
            load_fraction=local.load_fraction,
            drain_timeout_s=local.drain_timeout_s,
            workdir=production.parent / "rollout",
            triton_venv=settings.triton_venv,
            progress=progress,
        ).run()

    return run


def store_plan_documents(
    settings: PromotionSettings, entry: Entry, plan: PromotionPlan, pid: str
) -> dict[str, str]:
    """The plan and its Argo Rollouts / SageMaker renderings (placed as the catalog places the
    entry's device), stored under the promotion; ``{file name: URI}``."""
    b = entry.body
    try:
        if settings.catalog is None:
            raise KeyError(b.device)
        t = settings.catalog.target(b.device)
        node_selector = dict(t.kubernetes.node_selector)
        tolerations = [tol.model_dump(exclude_none=True) for tol in t.kubernetes.tolerations]
        gpus = t.kubernetes.gpu_count
    except KeyError:
        node_selector, tolerations, gpus = {}, [], 0
    bucket, root = artifact_location(settings.policy.iam, settings.iam_bucket, settings.iam_prefix)
    s3_pack = f"s3://{bucket}/{root + '/' if root else ''}{b.pointers.pack_prefix}"
    docs = plan_documents(
        plan,
        image=b.pointers.container_tag or f"{b.model_name}:{b.version}",
        model_repository_uri=f"{s3_pack}/triton",
        model_data_url=f"{s3_pack}/triton.tar.gz",
        node_selector=node_selector,
        tolerations=tolerations,
        gpu_count=gpus,
    )
    return {
        name: settings.store.put_bytes(f"registry/promotions/{pid}/{name}", text.encode()).uri
        for name, text in docs.items()
    }


def run_rollout(
    settings: PromotionSettings,
    entry: Entry,
    production: Entry,
    plan: PromotionPlan,
    traffic: Traffic | Callable[[], Traffic] | None,
    *,
    runner: RolloutRunner | None,
    record: Recorder,
    key: str,
    pid: str,
    crash: Callable[[str], None],
    warnings: list[str] | None = None,
) -> RolloutReport:
    """One attempt of the rollout, production vs candidate (``crash("mid_rollout")`` after each
    passed step: the tests' crash point). Deployment warnings (a moved tag) go to ``warnings``;
    a refused deployment raises :class:`adas.registry.deploy.DeployRefused` before any server starts."""
    reg = settings.registry
    if callable(traffic):
        traffic = traffic()
    if traffic is None or len(traffic.frames) == 0:
        raise RegistryError(f"promotion {pid}: no recorded requests to replay for the rollout")
    attempt = 1 + len(reg.events(promotion_id=pid, kinds=["rollout_started"]))
    base = Path(settings.workdir or tempfile.gettempdir()) / pid / f"attempt-{attempt}"
    prod = deploy_entry(settings, production, base / "production")
    cand = deploy_entry(settings, entry, base / "candidate")
    prod_repo, cand_repo = prod.path, cand.path
    if warnings is not None:
        warnings.extend([*prod.warnings, *cand.warnings])
    record(
        "rollout_started",
        f"{key}:rollout:{attempt}",
        f"attempt {attempt}: {production.version} (production) vs {entry.version} (candidate), {plan.strategy}",
        {
            "attempt": attempt,
            "frames": len(traffic.frames),
            "deployed": {"production": prod.summary(), "candidate": cand.summary()},
        },
    )
    counter = {"n": 0}

    def progress(kind: str, data: dict[str, Any]) -> None:
        if kind in ("step_passed", "rollback_decided", "rolled_back"):
            counter["n"] += 1
            record(
                "rollout_step",
                f"{key}:rollout:{attempt}:{counter['n']}",
                f"{kind}: {data.get('name') or data.get('step') or ''} {data.get('reason') or ''}".strip(),
                {"event": kind, **{x: v for x, v in data.items() if not isinstance(v, dict)}},
            )
        if kind == "step_passed":
            crash("mid_rollout")

    report = (runner or local_runner(settings))(plan, prod_repo, cand_repo, traffic, progress)
    record(
        "rollout_finished",
        f"{key}:rollout:{attempt}:finished",
        f"{report.outcome}: {report.reason}",
        {
            "outcome": report.outcome,
            "throughput_rps": report.throughput_rps,
            "offered_rps": report.offered_rps,
            "capacity_rps": report.capacity_rps,
            "requests": report.requests["sent"],
            "dropped_requests": report.dropped_requests,
            "dropped_production_requests": report.dropped_production_requests,
            "breach_to_rollback_s": report.breach.breach_to_rollback_s if report.breach else None,
            "steps": [s.model_dump() for s in report.steps],
        },
    )
    return report
