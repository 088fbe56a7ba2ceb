"""Every rendering of a plan as files: the plan itself, Argo Rollouts, SageMaker."""

import json
from typing import Any

from adas.registry.rollout.argo import render_argo_rollout
from adas.registry.rollout.plan import PromotionPlan
from adas.registry.rollout.sagemaker import render_sagemaker_deployment


def plan_documents(plan: PromotionPlan, **kwargs: Any) -> dict[str, str]:
    """``{file name: text}`` of the plan's production renderings."""
    argo = render_argo_rollout(
        plan,
        image=kwargs["image"],
        model_repository_uri=kwargs["model_repository_uri"],
        node_selector=kwargs.get("node_selector"),
        tolerations=kwargs.get("tolerations"),
        gpu_count=kwargs.get("gpu_count", 0),
    )
    sm = render_sagemaker_deployment(plan, image=kwargs["image"], model_data_url=kwargs["model_data_url"])
    return {
        "plan.json": plan.model_dump_json(indent=2),
        "argo_rollout.yaml": argo,
        "sagemaker_deployment.json": json.dumps(sm, indent=2),
    }
