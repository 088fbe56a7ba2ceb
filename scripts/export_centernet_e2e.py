"""Export a CenterNet bundle with its decode in the graph: the ``centernet-e2e`` demo bundle.

    python scripts/export_centernet_e2e.py demo/bundles/candidate demo/bundles/centernet-e2e --version 1.3.1

The source bundle is our own trained ``model.pt2`` (a developer tool on a shipped bundle, not
intake: candidates from teams are only ever loaded in the sandbox). The result is ``model.onnx``
of kind ``detections`` (``[B, 100, 6]`` packed rows), same classes, input and threshold, under
its own version (a version names one set of bytes: the same weights exported anew are a new one).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from adas.detector.bundle import load_bundle_model, read_contract, read_lineage  # noqa: E402
from adas.detector.e2e import write_e2e_bundle  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source", type=Path, help="a CenterNet bundle (kind heatmap)")
    p.add_argument("out", type=Path, help="bundle directory to write")
    p.add_argument("--version", required=True, help="the e2e bundle's own version, e.g. 1.3.1")
    p.add_argument("--top-k", type=int, default=100)
    args = p.parse_args(argv)
    base = read_contract(args.source)
    if base.postprocess.kind != "heatmap":
        raise SystemExit(f"{args.source}: postprocess kind is {base.postprocess.kind}, not heatmap")
    lineage = read_lineage(args.source).model_copy(
        update={"exported_from": f"{base.model_name} {base.version} (decode moved into the graph)"}
    )
    base = base.model_copy(update={"version": args.version})
    out = write_e2e_bundle(load_bundle_model(args.source), base, lineage, args.out, args.top_k)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
