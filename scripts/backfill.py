"""Backfill one device column (or one precision row) of per-target assets through the webserver.

Uses the GraphQL mutation `launchPartitionBackfill` of a running `dagster dev` / dagster-webserver
and follows the backfill to completion. Only cells the target catalog supports are requested.

    python scripts/backfill.py --device x86-cpu                 # every supported precision of x86-cpu
    python scripts/backfill.py --precision int8 --assets engine
"""

import argparse
import json
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from adas.catalog import load_catalog
from adas.cell import Cell
from adas_assets.partitions import partition_key

LAUNCH = """
mutation Launch($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message stack }
    ... on InvalidSubsetError { message }
    ... on UnauthorizedError { message }
  }
}"""
STATUS = """
query Status($id: String!) {
  partitionBackfillOrError(backfillId: $id) {
    __typename
    ... on PartitionBackfill { status numPartitions numCancelable }
    ... on PythonError { message }
  }
}"""
RUNS = """
query Runs($id: String!) {
  runsOrError(filter: {tags: [{key: "dagster/backfill", value: $id}]}) {
    ... on Runs { results { runId status tags { key value } } }
  }
}"""
DONE_OK = {"COMPLETED_SUCCESS", "COMPLETED"}
DONE_BAD = {"FAILED", "CANCELED", "COMPLETED_FAILED"}


def graphql(url: str, query: str, variables: dict) -> dict:
    req = urllib.request.Request(
        f"{url.rstrip('/')}/graphql",
        data=json.dumps({"query": query, "variables": variables}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=60) as resp:
        body = json.loads(resp.read())
    if body.get("errors"):
        raise RuntimeError(f"GraphQL errors: {body['errors']}")
    return body["data"]


def cells(device: str | None, precision: str | None) -> list[str]:
    catalog = load_catalog()
    if device is not None:
        catalog.target(device)  # unknown device: a clear error naming the catalog
    return [
        partition_key(Cell(d, p))
        for d, p in catalog.supported_pairs()
        if (device is None or d == device) and (precision is None or p == precision)
    ]


def launch(url: str, assets: list[str], partitions: list[str], tags: dict[str, str]) -> str:
    params = {
        "assetSelection": [{"path": a.split("/")} for a in assets],
        "partitionNames": partitions,
        "tags": [{"key": k, "value": v} for k, v in tags.items()],
    }
    result = graphql(url, LAUNCH, {"params": params})["launchPartitionBackfill"]
    if result["__typename"] != "LaunchBackfillSuccess":
        raise RuntimeError(f"backfill not launched: {result}")
    return result["backfillId"]


def follow(url: str, backfill_id: str, timeout_s: float, poll_s: float = 3.0) -> str:
    deadline = time.time() + timeout_s
    last = None
    while time.time() < deadline:
        status = graphql(url, STATUS, {"id": backfill_id})["partitionBackfillOrError"]
        runs = graphql(url, RUNS, {"id": backfill_id})["runsOrError"].get("results", [])
        summary = f"{status.get('status')}: " + ", ".join(
            f"{next((t['value'] for t in r['tags'] if t['key'] == 'dagster/partition'), '?')}={r['status']}"
            for r in runs
        )
        if summary != last:
            print(f"  [{time.strftime('%H:%M:%S')}] {summary}", flush=True)
            last = summary
        if status.get("status") in DONE_OK | DONE_BAD:
            return status["status"]
        time.sleep(poll_s)
    raise TimeoutError(f"backfill {backfill_id} still running after {timeout_s:.0f} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--device", help="one device column, e.g. x86-cpu or t4")
    group.add_argument("--precision", help="one precision row, e.g. int8")
    parser.add_argument("--assets", default="engine", help="comma-separated asset keys (default: engine)")
    parser.add_argument("--url", default="http://127.0.0.1:3000")
    parser.add_argument("--timeout", type=float, default=3600)
    args = parser.parse_args(argv)
    partitions = cells(args.device, args.precision)
    if not partitions:
        print("no supported cell matches; see config/targets.yaml", file=sys.stderr)
        return 2
    assets = [a.strip() for a in args.assets.split(",") if a.strip()]
    tags = {"adas/backfill": f"device={args.device}" if args.device else f"precision={args.precision}"}
    backfill_id = launch(args.url, assets, partitions, tags)
    print(f"backfill {backfill_id}: {', '.join(assets)} x {partitions}")
    print(f"  follow it in the UI: {args.url.rstrip('/')}/runs/b/{backfill_id}")
    status = follow(args.url, backfill_id, args.timeout)
    print(f"backfill {backfill_id} finished: {status}")
    return 0 if status in DONE_OK else 1


if __name__ == "__main__":
    raise SystemExit(main())
