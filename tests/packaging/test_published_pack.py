"""Publication wired into the platform: the ``oci_registry`` resource chosen by the environment
switch (the local ``docker-registry`` daemon under ADAS_HOME, started on demand and left running;
production's URL and credentials from the environment only) and the ``published_pack`` asset
pushing a cell's pack through it, with skopeo as the independent client."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from adas.packaging.local_oci_registry import (
    PID_FILE,
    LocalOciRegistry,
    LocalRegistryError,
    ensure_local_registry,
    local_registry_pid,
    registry_available,
    stop_local_registry,
)
from adas.packaging.oci_client import PASSWORD_ENV, TOKEN_ENV, USERNAME_ENV
from adas.packaging.oci_settings import DEFAULT_LOCAL_PORT, PORT_ENV, REGISTRY_ENV, OciRegistrySettings
from adas.packaging.refs import PackRef, PublishedPackRef
from adas.packaging.triton_server import free_port
from adas.settings import AdasHome
from adas.storage import LocalArtifactStore
from adas_assets.intake import assets as intake
from adas_assets.packaging import assets as packaging
from adas_assets.partitions import TARGET_PARTITIONS
from resources import build_resources
from resources.io_manager import encode_value, value_key
from resources.oci_registry import OciRegistryResource
from tests.packaging.oci_packs import make_pack

CELL = "x86-cpu|fp32"
needs_registry = pytest.mark.skipif(
    not registry_available(), reason="docker-registry not installed (bash scripts/setup_system_deps.sh)"
)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[AdasHome]:
    """A fresh ADAS_HOME whose local registry port is free; its daemon is stopped afterwards."""
    home = AdasHome(tmp_path / "home").ensure()
    monkeypatch.setenv("ADAS_HOME", str(home.root))
    monkeypatch.setenv(PORT_ENV, str(free_port()))
    for var in (REGISTRY_ENV, USERNAME_ENV, PASSWORD_ENV, TOKEN_ENV, "ADAS_OCI_NAMESPACE"):
        monkeypatch.delenv(var, raising=False)
    yield home
    stop_local_registry(home.oci_registry)


def test_environment_switch_local_daemon_or_url_and_credentials_from_the_environment(
    home: AdasHome, monkeypatch: pytest.MonkeyPatch
) -> None:
    local = build_resources("local", home)["oci_registry"]
    assert isinstance(local, OciRegistryResource)
    assert local.url == "" and local.local_root == str(home.oci_registry)
    assert local.local_port == int(os.environ[PORT_ENV])  # the fixture's free port, not the default
    assert not (home.oci_registry / PID_FILE).exists()  # building resources starts nothing
    monkeypatch.delenv(PORT_ENV)
    assert OciRegistrySettings.from_env("local", home).local_port == DEFAULT_LOCAL_PORT
    monkeypatch.setenv(PORT_ENV, "http")
    with pytest.raises(ValueError, match=f"{PORT_ENV}='http' is not a TCP port"):
        OciRegistrySettings.from_env("local", home)

    # Production: the URL is named as a variable, credentials are no configuration at all.
    monkeypatch.setenv(REGISTRY_ENV, "https://123.dkr.ecr.eu-central-1.amazonaws.com")
    monkeypatch.setenv("ADAS_OCI_NAMESPACE", "adas/")
    monkeypatch.setenv(USERNAME_ENV, "AWS")
    monkeypatch.setenv(PASSWORD_ENV, "s3cret-from-ecr")
    prod = build_resources("production")["oci_registry"]
    assert isinstance(prod, OciRegistryResource) and isinstance(prod.url, dg.EnvVar)
    assert prod.url.env_var_name == REGISTRY_ENV
    assert "s3cret-from-ecr" not in json.dumps(prod.model_dump(), default=str)
    assert not {"password", "token", "username"} & set(OciRegistryResource.model_fields)
    client = prod.process_config_and_initialize().client()
    assert client.url == "https://123.dkr.ecr.eu-central-1.amazonaws.com" and client.credentials is not None
    assert (client.credentials.username, client.credentials.password) == ("AWS", "s3cret-from-ecr")
    assert prod.process_config_and_initialize().namespace == "adas"


@needs_registry
def test_local_daemon_started_once_left_running_reused_and_stopped(home: AdasHome) -> None:
    settings = OciRegistrySettings.from_env("local", home)
    # Two cells' runs asking at once start one daemon.
    clients = []
    threads = [threading.Thread(target=lambda: clients.append(settings.client())) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(clients) == 2 and clients[0].url == clients[1].url == f"http://127.0.0.1:{settings.local_port}"
    pid = local_registry_pid(home.oci_registry)
    assert pid is not None and _alive(pid)
    assert json.loads((home.oci_registry / PID_FILE).read_text())["port"] == settings.local_port
    # A later run (new settings, new client) finds it running: the same process answers.
    OciRegistrySettings.from_env("local", home).client().tags("none/yet")
    assert local_registry_pid(home.oci_registry) == pid
    # Its pid file removed under it (e.g. `make clean-state`): it is found by its config and adopted.
    (home.oci_registry / PID_FILE).unlink()
    assert ensure_local_registry(home.oci_registry, settings.local_port).url == clients[0].url
    assert local_registry_pid(home.oci_registry) == pid

    assert stop_local_registry(home.oci_registry) == pid
    assert not _alive(pid) and not (home.oci_registry / PID_FILE).exists()
    assert stop_local_registry(home.oci_registry) is None


@needs_registry
def test_another_registry_on_the_port_is_refused_naming_the_port_variable(
    home: AdasHome, tmp_path: Path
) -> None:
    port = OciRegistrySettings.from_env("local", home).local_port
    refusal = f"127.0.0.1:{port}.*not the one of .*{PORT_ENV}"
    with (
        LocalOciRegistry(tmp_path / "someone-elses", port=port),
        pytest.raises(LocalRegistryError, match=refusal),
    ):
        ensure_local_registry(home.oci_registry, port)
    assert local_registry_pid(home.oci_registry) is None


def _definitions(resources: dict) -> dg.Definitions:
    return dg.Definitions(assets=dg.load_assets_from_modules([intake, packaging]), resources=resources)


def _seed_pack(home: AdasHome, tmp_path: Path) -> PackRef:
    store = LocalArtifactStore(home.artifacts)  # where the artifact_store resource keeps them
    pack = make_pack(store, tmp_path / "work", home.keys)
    store.put_bytes(value_key(dg.AssetKey("model_pack"), CELL, TARGET_PARTITIONS), encode_value(pack))
    return pack


def _publish(defs: dg.Definitions, instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        list(defs.assets or []),
        selection=["published_pack"],
        partition_key=CELL,
        resources=defs.resources,
        instance=instance,
        raise_on_error=False,
    )


@needs_registry
def test_published_pack_records_the_digest_skopeo_reads_and_skips_known_layers(
    home: AdasHome, tmp_path: Path
) -> None:
    pack = _seed_pack(home, tmp_path)
    resources = build_resources("local", home)
    defs = _definitions(resources)
    with dg.instance_for_test() as instance:
        first = _publish(defs, instance)
        assert first.success
        ref = first.output_for_node("published_pack")
        assert isinstance(ref, PublishedPackRef)
        port = resources["oci_registry"].local_port
        assert ref.reference == f"127.0.0.1:{port}/{ref.repository}@{ref.digest}"
        assert ref.tag == "1.4.0-x86-cpu-fp32-abcdef0" and ref.pack_manifest_sha256 == pack.manifest.sha256
        meta = first.asset_materializations_for_node("published_pack")[0].metadata
        assert meta["oci_reference"].value == ref.reference and meta["digest"].value == ref.digest
        # Every layer and the config sent once; nothing was there before.
        assert meta["bytes_pushed"].value == ref.bytes_pushed > sum(layer.size for layer in ref.layers)
        assert ref.blobs_pushed == len(ref.layers) + 1 and ref.bytes_skipped == 0
        assert f"**`{ref.reference}`**" in meta["summary"].value and "| engine |" in meta["summary"].value
        # No serving image (no base pinned in config/serving.yaml): said in one line, not skipped.
        assert meta["serving_image"].value == ref.serving_image
        assert "Serving image: none built, no base image pinned by digest" in meta["summary"].value
        assert meta["wandb_artifact"].value == ref.wandb_artifact == "test-detector-x86-cpu-fp32:1.4.0"
        if shutil.which("skopeo"):
            raw = subprocess.run(
                ["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{ref.tagged}"],
                capture_output=True,
                check=True,
            ).stdout
            assert f"sha256:{hashlib.sha256(raw).hexdigest()}" == ref.digest
        pid = local_registry_pid(home.oci_registry)
        assert pid is not None  # left running after the run

        again = _publish(defs, instance)
        assert again.success
        second = again.output_for_node("published_pack")
        assert second.digest == ref.digest and second.bytes_pushed == 0 and second.blobs_pushed == 0
        assert second.bytes_skipped == ref.bytes_pushed and second.blobs_skipped == ref.blobs_pushed
        assert not any(layer.uploaded for layer in second.layers)
        assert local_registry_pid(home.oci_registry) == pid  # the same daemon served both runs


def test_registry_down_fails_the_run_naming_the_registry_url(
    home: AdasHome, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _seed_pack(home, tmp_path)
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}"
    resources = {**build_resources("local", home), "oci_registry": OciRegistryResource(url=url)}
    with dg.instance_for_test() as instance:
        result = _publish(_definitions(resources), instance)
    assert not result.success
    (failure,) = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    message = str(failure.event_specific_data.error)  # type: ignore[union-attr]
    assert "publishing models/" in message and url in message, message


@needs_registry
def test_another_adas_homes_registry_on_the_port_is_named_with_how_to_stop_it(
    home: AdasHome, tmp_path: Path
) -> None:
    """A second demo under another ADAS_HOME meets the first one's registry (left running for
    `make ui`): the refusal says whose it is and how to stop it."""
    port = OciRegistrySettings.from_env("local", home).local_port
    other = tmp_path / "other-home" / "oci-registry"
    ensure_local_registry(other, port)
    try:
        named = re.escape(str(other))
        with pytest.raises(
            LocalRegistryError, match=f"the one of {named}.*local_oci_registry stop {named}.*{PORT_ENV}"
        ):
            ensure_local_registry(home.oci_registry, port)
        assert local_registry_pid(home.oci_registry) is None
    finally:
        stop_local_registry(other)
