"""A registry with production adopted (1.2.0) and a registered, signed candidate (1.3.0), its
pack published to a real OCI registry (deployments pull it by digest)."""

from __future__ import annotations

import atexit
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adas.catalog import load_catalog
from adas.packaging.local_oci_registry import LocalOciRegistry
from adas.packaging.oci_client import RegistryClient
from adas.packaging.oci_settings import OciRegistrySettings
from adas.packaging.trust import TRUST_FILE
from adas.registry.config import CanaryStep, RegistryPolicy, load_policy
from adas.registry.entries import adopted_entry, entry_from_pack
from adas.registry.models import ROLES, Entry
from adas.registry.registration import adopt_production, register_entry
from adas.registry.replay import Traffic
from adas.registry.settings import PromotionSettings
from adas.registry.store import RegistryStore
from adas.storage import LocalArtifactStore
from tests.registry.packs import Built, build_pack, frames, publish_signed, triton_ref_for

TARGET = "x86-cpu/fp32"
TAGS = [
    {"scenario": s, "weather": w, "lighting": "day"} for s in ("highway", "merge") for w in ("clear", "fog")
]


_SHARED: list[LocalOciRegistry] = []


def shared_oci_registry(root: Path) -> LocalOciRegistry:
    """One docker-registry per test process (started on first use, stopped at exit): packs are
    content-addressed, so worlds share it. A test that tampers with blobs brings its own."""
    if not _SHARED:
        _SHARED.append(LocalOciRegistry(root).start())
        atexit.register(_SHARED[0].stop)
    return _SHARED[0]


def fast_policy(**analysis: Any) -> RegistryPolicy:
    policy = load_policy()
    canary = policy.rollout.canary.model_copy(
        update={"steps": [CanaryStep(weight=w, bake_s=2.0) for w in (1, 5, 25, 100)]}
    )
    rollout = policy.rollout.model_copy(
        update={
            "canary": canary,
            "analysis": policy.rollout.analysis.model_copy(update={"baseline_s": 1.0, **analysis}),
        }
    )
    return policy.model_copy(update={"rollout": rollout})


@dataclass
class World:
    registry: RegistryStore
    store: LocalArtifactStore
    key_dir: Path
    workdir: Path
    production: Entry
    candidate: Entry
    built: Built
    policy: RegistryPolicy
    oci: LocalOciRegistry | None = None

    def settings(self, notifier: Any = None) -> PromotionSettings:
        return PromotionSettings(
            registry=self.registry,
            store=self.store,
            policy=self.policy,
            trusted_keys=self.key_dir / TRUST_FILE,
            notifier=notifier,
            workdir=self.workdir / "promotions",
            oci=OciRegistrySettings(url=self.oci.url) if self.oci else None,
        )

    def approve_all(self, entry: Entry | None = None) -> None:
        for role in ROLES:
            self.registry.approve((entry or self.candidate).id, role, actor=f"{role}-lead", reason="reviewed")

    @staticmethod
    def traffic() -> Traffic:
        return Traffic(frames(16), TAGS * 4)


def make_world(
    registry_url: str,
    tmp_path: Path,
    onnx_models: dict[str, Path],
    *,
    publish: bool = True,
    oci: LocalOciRegistry | None = None,
    **candidate: Any,
) -> World:
    """``publish=False``: the candidate registered without a publication (an older entry)."""
    registry = RegistryStore(registry_url)
    store = LocalArtifactStore(root=str(tmp_path / "artifacts"))
    keys = tmp_path / "keys"
    prod = build_pack(store, tmp_path / "build", keys, "1.2.0", onnx_models["agree"])
    tref = triton_ref_for(store, "1.2.0", prod.triton_dir)
    production = adopt_production(
        registry, adopted_entry(store, prod.pack.engine, tref, load_catalog()), actor="system:adoption"
    )
    model = onnx_models[candidate.pop("model", "agree")]
    built = build_pack(store, tmp_path / "build", keys, candidate.pop("version", "1.3.0"), model, **candidate)
    oci = oci or shared_oci_registry(tmp_path.parent / "oci-registry-shared")
    published = publish_signed(store, built.pack, RegistryClient(oci.url), keys) if publish else None
    body = entry_from_pack(
        store, built.pack, built.gate, built.sim, built.report, load_catalog(), published=published
    )
    entry, _ = register_entry(registry, body, actor="ci")
    return World(registry, store, keys, tmp_path, production, entry, built, fast_policy(), oci)
