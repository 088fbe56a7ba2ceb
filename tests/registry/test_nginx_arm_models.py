"""The local splitter serves arms whose models have different names: clients address one name and
nginx hands each arm its own (a candidate of another family is the common case)."""

from __future__ import annotations

import http.server
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from adas.packaging.triton_repository import write_triton_repository
from adas.packaging.triton_server import free_port
from adas.registry.nginx import BASELINE_PREFIX, ArmModels, NginxSplitter, Split, nginx_available
from adas.registry.rollout.controller import served_model_name
from tests.registry.packs import CPU, contract

pytestmark = pytest.mark.skipif(not nginx_available(), reason="no nginx: run scripts/setup_system_deps.sh")


class _Recorder(http.server.BaseHTTPRequestHandler):
    seen: list[str]

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.seen.append(self.path)
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: object) -> None:
        pass


def _backend() -> tuple[http.server.ThreadingHTTPServer, list[str]]:
    seen: list[str] = []
    handler = type("Recorder", (_Recorder,), {"seen": seen})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, seen


@pytest.fixture
def arms(tmp_path: Path) -> Iterator[tuple[NginxSplitter, list[str], list[str]]]:
    prod, prod_seen = _backend()
    cand, cand_seen = _backend()
    models = ArmModels(production="vehicle-centernet", candidate="vehicle-dense")
    nginx = NginxSplitter(tmp_path / "nginx", free_port(), prod.server_port, cand.server_port, models)
    try:
        yield nginx, prod_seen, cand_seen
    finally:
        nginx.stop()
        prod.shutdown()
        cand.shutdown()


def _post(nginx: NginxSplitter, path: str) -> None:
    req = urllib.request.Request(f"http://{nginx.url}{path}", data=b"{}", method="POST")
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status == 200


def test_each_arm_receives_its_own_model_name(arms: tuple[NginxSplitter, list[str], list[str]]) -> None:
    nginx, prod_seen, cand_seen = arms
    nginx.start(Split(0))  # everything to production
    _post(nginx, "/v2/models/vehicle-dense/infer")
    nginx.apply(Split(100))  # everything to the candidate
    _post(nginx, "/v2/models/vehicle-dense/infer")
    _post(nginx, f"{BASELINE_PREFIX}/v2/models/vehicle-dense/infer")  # baseline probe: production
    # The statistics of every model are not a model: they reach the arm as asked. Nor are the steps the ensemble's configuration names (a client reading it asks for them).
    _post(nginx, "/v2/models/stats")
    _post(nginx, "/v2/models/vehicle-dense_preprocess/versions/1/config")
    assert prod_seen == ["/v2/models/vehicle-centernet/infer", "/v2/models/vehicle-centernet/infer"]
    assert cand_seen == [
        "/v2/models/vehicle-dense/infer",
        "/v2/models/stats",
        "/v2/models/vehicle-dense_preprocess/versions/1/config",
    ]


def test_the_served_name_is_the_repository_ensemble(tmp_path: Path) -> None:
    model = tmp_path / "model.onnx"
    model.write_bytes(b"not read by the repository writer")
    repo = write_triton_repository(tmp_path / "repo", contract("1.3.0", model_name="vehicle-x"), model, **CPU)
    assert served_model_name(repo.root) == "vehicle-x"
    # A registry entry's repository is materialized from its pack's triton/ files: the ensemble's
    # config.pbtxt is what names it, so nothing else is needed.
    (repo.root / "inference_config.json").unlink()
    assert served_model_name(repo.root) == "vehicle-x"

    (tmp_path / "bare" / "engine").mkdir(parents=True)
    (tmp_path / "bare" / "engine" / "config.pbtxt").write_text('name: "engine"\nbackend: "onnxruntime"\n')
    with pytest.raises(ValueError, match="exactly one ensemble; found none"):
        served_model_name(tmp_path / "bare")
