"""Stored asset values (``adas.values``): typed round trips, and a decoder that imports model
classes from the core only (legacy ``adas_assets.*`` class paths are read as ``adas.*``)."""

import json

import pytest
from pydantic import BaseModel

from adas.registry.models import AliasRef, RegistryEntryRef
from adas.values import StoredValueError, decode_value, encode_value, model_class, stored_value_key


def _ref() -> RegistryEntryRef:
    return RegistryEntryRef(
        entry_id=3,
        model_name="m",
        version="1.0.0",
        target="x86-cpu/fp32",
        digest="d" * 64,
        created=True,
        registry="sqlite:///r.db",
    )


def _record(model: str | None, value: object) -> bytes:
    return json.dumps({"model": model, "value": value}).encode()


def test_round_trip_keeps_the_model_class() -> None:
    ref = _ref()
    data = encode_value(ref)
    assert json.loads(data)["model"] == "adas.registry.models:RegistryEntryRef"
    back = decode_value(data)
    assert type(back) is RegistryEntryRef and back == ref
    assert decode_value(encode_value({"plain": [1, 2]})) == {"plain": [1, 2]}


def test_legacy_dagster_layer_class_paths_load_from_the_core() -> None:
    """Values stored before the core moved out of ``adas_assets`` still load."""
    value = AliasRef(
        target="orin/int8",
        action="promote",
        outcome="promoted",
        production_version="1.3.0",
        production_entry=2,
        rollback_version="1.2.0",
    )
    legacy = _record("adas_assets.registry.models:AliasRef", value.model_dump(mode="json"))
    assert decode_value(legacy) == value


@pytest.mark.parametrize(
    "model",
    [
        "os:system",  # not a model, and not the core
        "subprocess:Popen",
        "pydantic:BaseModel",  # a model class, but not the core's
        "tests.registry.test_values:Outside",
        "adasx.evil:Model",  # a look-alike package name
        "adas_assets:Thing",  # the legacy package itself names no core module
    ],
)
def test_decoder_refuses_classes_outside_the_core(model: str) -> None:
    with pytest.raises(StoredValueError, match="not a module of the core"):
        decode_value(_record(model, {}))


def test_decoder_refuses_core_objects_that_are_not_models() -> None:
    with pytest.raises(StoredValueError, match="not a pydantic model"):
        model_class("adas.values:decode_value")
    with pytest.raises(StoredValueError, match="no Missing"):
        model_class("adas.registry.models:Missing")
    with pytest.raises(StoredValueError, match="not found"):
        model_class("adas.no_such_module:Model")


class Outside(BaseModel):
    x: int = 1


def test_encoder_refuses_models_outside_the_core() -> None:
    with pytest.raises(StoredValueError, match="not a module of the core"):
        encode_value(Outside())


def test_value_keys() -> None:
    assert stored_value_key(["golden_dataset"]) == "asset-values/golden_dataset/value.json"
    assert (
        stored_value_key(["engine"], "device=orin/precision=int8")
        == "asset-values/engine/device=orin/precision=int8.json"
    )
