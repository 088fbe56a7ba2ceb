"""Against a real `dagster dev` on localhost: a device-column backfill through GraphQL, and the UI
in a real browser (Debian's Chromium driven by Playwright). Screenshots land in test-artifacts/ui/."""

import json
import os
import re
import shutil
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from resources.dagster_dev import dagster_dev, launch_chromium

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts" / "ui"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, bundle_template: Path) -> Iterator[dict]:
    from adas.settings import AdasHome
    from resources.instance import prepare_local_instance

    home = AdasHome(tmp_path_factory.mktemp("ui-home")).ensure()
    env_before = dict(os.environ)
    prepare_local_instance(home)
    os.environ["ADAS_PACKAGING_CONFIG"] = str(REPO / "tests/packaging/fast_packaging.yaml")
    os.environ["ADAS_SENSORS_DEFAULT"] = "stopped"
    from adas_assets.definitions import make_definitions
    from resources import build_resources

    defs = make_definitions(build_resources("local", home))
    assets = list(defs.assets or [])
    shutil.copytree(bundle_template, home.inbox / "cand")
    with dg.DagsterInstance.get() as instance:
        for selection, config in (
            (
                [
                    "target_catalog",
                    "golden_dataset",
                    "slice_catalog",
                    "calibration_shard",
                    "replay_log_bundles",
                ],
                {
                    "golden_dataset": {"config": {"size": "tiny", "workers": 1}},
                    "calibration_shard": {"config": {"size": 8, "strata": ["all"]}},
                },
            ),
            (
                ["candidate_checkpoint", "staged_checkpoint", "exported_graph"],
                {
                    "candidate_checkpoint": {
                        "config": {"bundle_name": "cand", "bundle_location": str(home.inbox / "cand")}
                    }
                },
            ),
        ):
            assert dg.materialize(
                assets,
                selection=selection,
                instance=instance,
                resources=defs.resources,
                run_config=dg.RunConfig(ops=config),
            ).success
    try:
        with dagster_dev(log_path=home.root / "dagster-dev.log") as url:
            yield {"url": url, "home": home}
    finally:
        os.environ.clear()
        os.environ.update(env_before)


def _graphql(url: str, query: str, variables: dict | None = None) -> dict:
    req = urllib.request.Request(
        f"{url}/graphql",
        data=json.dumps({"query": query, "variables": variables or {}}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=60) as resp:
        return json.loads(resp.read())["data"]


def test_backfill_one_device_column_through_graphql(server: dict) -> None:
    sys.path.insert(0, str(REPO / "scripts"))
    import backfill

    assert backfill.cells("x86-cpu", None) == ["x86-cpu|fp32", "x86-cpu|int8"]
    assert (
        backfill.main(
            ["--device", "x86-cpu", "--assets", "engine", "--url", server["url"], "--timeout", "900"]
        )
        == 0
    )
    data = _graphql(
        server["url"],
        '{ assetNodes(assetKeys: [{path: ["engine"]}]) { partitionStats { numMaterialized numFailed } } }',
    )
    stats = data["assetNodes"][0]["partitionStats"]
    assert stats == {"numMaterialized": 2, "numFailed": 0}
    with pytest.raises(KeyError, match="unknown device 'v100'"):
        backfill.cells("v100", None)


@pytest.fixture(scope="module")
def page(server: dict) -> Iterator:
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=30_000)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = launch_chromium(p)
        page = browser.new_page(viewport={"width": 1800, "height": 2200})
        yield page
        browser.close()


def test_asset_graph_shows_groups_and_lineage(server: dict, page) -> None:  # type: ignore[no-untyped-def]
    from playwright.sync_api import expect

    page.goto(f"{server['url']}/asset-groups?expanded=global@global:intake,global@global:packaging")
    # Long names are middle-truncated on the nodes ("candid…_checkpoint"), so match both ends.
    for first, last in (
        ("candid", "checkpoint"),
        ("golden", "dataset"),
        ("staged", "checkpoint"),
        ("export", "graph"),
        ("triton", "repository"),
        ("production", "engine"),
    ):
        expect(page.get_by_text(re.compile(rf"^{first}.*{last}$")).first).to_be_visible()
    page.screenshot(path=str(ARTIFACTS / "asset_graph.png"))


def test_partitioned_asset_shows_device_by_precision_grid(server: dict, page) -> None:  # type: ignore[no-untyped-def]
    from playwright.sync_api import expect

    page.goto(f"{server['url']}/assets/engine?view=partitions")
    for label in ("x86-cpu", "orin", "fp16", "int8"):
        expect(page.get_by_text(label, exact=True).first).to_be_visible()
    page.screenshot(path=str(ARTIFACTS / "engine_partitions.png"))


def test_materialization_shows_its_reports(server: dict, page) -> None:  # type: ignore[no-untyped-def]
    from playwright.sync_api import expect

    page.goto(f"{server['url']}/assets/candidate_checkpoint?view=events")
    # The identity as metadata entries, and the summary table behind the UI's markdown button (the
    # UI folds a long markdown value: the summary now describes any postprocess kind).
    expect(page.get_by_text("bundle_sha256", exact=True).first).to_be_visible()
    expect(page.get_by_text("training_run_id", exact=True).first).to_be_visible()
    page.get_by_text("Show Markdown").first.click()
    expect(page.get_by_text("bundle sha256").first).to_be_visible()
    expect(page.get_by_text("training run").first).to_be_visible()
    page.screenshot(path=str(ARTIFACTS / "candidate_events.png"), full_page=True)
    page.goto(f"{server['url']}/assets/target_catalog?view=events")
    expect(page.get_by_text("unsupported").first).to_be_visible()
    page.screenshot(path=str(ARTIFACTS / "target_catalog.png"), full_page=True)
