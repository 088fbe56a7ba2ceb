"""Benchmark the evaluation of one CPU partition, and faster-coco-eval vs pycocotools.

    python scripts/benchmark_evaluation.py [--candidate demo/bundles/candidate]
        [--production demo/bundles/production] [--data .adas/datasets/demo]
        [--coco-rounds 5] [--profile standard] [--gates] [--write]

1. Builds the ONNX Runtime FP32 engines (x86-cpu/fp32) of both bundles the way packaging does
   (export + offline-optimized FP32 engine) and times it separately.
2. Times the **full evaluation** of the candidate engine on the golden test split against the
   production engine, exactly what the ``eval_report`` asset runs (primary metrics, slices,
   calibration, robustness subset, sensor faults, temporal stress on replay, OOD probes, drift,
   plots). Target: < 5 minutes on 2 cores.
3. Times the **COCO evaluation step** (every slice of ``slices.yaml`` on the candidate's
   detections) with faster-coco-eval and with pycocotools, side by side and interleaved over
   ``--coco-rounds`` rounds (median), and checks the numbers are identical. Target: >= 3x.
4. ``--gates``: the regression gate on the real bundles: candidate vs production, production
   vs itself, and the candidate made blind in fog (a wrapped engine) vs production.

``--write`` appends an "Evaluation (CPU)" section to BENCHMARKS.md (append only).
Without trained bundles, ``--untrained`` exports untrained detectors (timings only).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("WANDB_MODE", "offline")

import torch  # noqa: E402

from adas.catalog import load_catalog  # noqa: E402
from adas.datasets.slices import load_slices  # noqa: E402
from adas.detector.bundle import build_contract, load_bundle_model, read_contract  # noqa: E402
from adas.detector.coco_metrics import STAT_NAMES, coco_metrics  # noqa: E402
from adas.detector.model import CenterNet  # noqa: E402
from adas.evaluation.config import default_evaluation_settings  # noqa: E402
from adas.evaluation.evidence import paired_evidence  # noqa: E402
from adas.evaluation.gates import Latency, default_gates, evaluate_gates  # noqa: E402
from adas.evaluation.pipeline import (  # noqa: E402
    EvalData,
    ModelUnderTest,
    detection_calibration,
    evaluate_engine,
    snapshot,
)
from adas.evaluation.reports import json_bytes  # noqa: E402
from adas.evaluation.runner import (  # noqa: E402
    MaskedEngine,
    fog_mask,
    load_frames,
    measure_latency,
    open_engine,
    predict,
)
from adas.evaluation.slices import catalog_slices, slice_metrics  # noqa: E402
from adas.intake.contract import Normalization  # noqa: E402
from adas.packaging.export import export_onnx  # noqa: E402
from adas.packaging.ort_engines import build_fp32_engine  # noqa: E402
from scripts.benchmark_report import append_to_benchmarks, cpu_section_head  # noqa: E402

DEFAULT_DATA = REPO_ROOT / ".adas" / "datasets" / "demo"
DEFAULT_CANDIDATE = REPO_ROOT / "demo" / "bundles" / "candidate"
DEFAULT_PRODUCTION = REPO_ROOT / "demo" / "bundles" / "production"


def _engine_from_bundle(bundle: Path, out: Path) -> tuple[Path, Any]:
    contract = read_contract(bundle)
    exported = out / "export.onnx"
    export_onnx(load_bundle_model(bundle), contract, exported)
    build = build_fp32_engine(exported, out / "model.onnx")
    return build.path, contract


def _untrained(out: Path, version: str, seed: int) -> tuple[Path, Any]:
    torch.manual_seed(seed)
    contract = build_contract(
        version=version,
        model_name="untrained",
        task="vehicle-detection",
        normalization=Normalization(scale=1 / 255, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25)),
    )
    export_onnx(CenterNet().eval(), contract, out / "export.onnx")
    return build_fp32_engine(out / "export.onnx", out / "model.onnx").path, contract


def _coco_step(gt: dict, records: list[dict], slices: list[Any], backend: str) -> tuple[float, dict]:
    t = time.perf_counter()
    out = {s.name: coco_metrics(gt, records, image_ids=s.image_ids, backend=backend) for s in slices}
    return time.perf_counter() - t, out


def _max_diff(a: dict, b: dict) -> float:
    worst = 0.0
    for name in a:
        for k in STAT_NAMES:
            worst = max(worst, abs(a[name][k] - b[name][k]))
        for c in a[name]["per_class_AP"]:
            worst = max(worst, abs(a[name]["per_class_AP"][c] - b[name]["per_class_AP"][c]))
    return worst


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--candidate", type=Path, default=DEFAULT_CANDIDATE)
    ap.add_argument("--production", type=Path, default=DEFAULT_PRODUCTION)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--profile", default="standard", choices=["standard", "full"])
    ap.add_argument("--coco-rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--gates", action="store_true", help="also run the gate on production and a fog-blind candidate"
    )
    ap.add_argument("--untrained", action="store_true", help="untrained detectors (no bundles needed)")
    ap.add_argument("--json", type=Path, default=None, help="write every number here too")
    ap.add_argument("--write", action="store_true", help="append the results to BENCHMARKS.md")
    args = ap.parse_args(argv)

    if not (args.data / "golden_test.json").is_file():
        print(f"no dataset at {args.data}: generate it with `python -m adas.datasets --out {args.data}`")
        return 2
    trained = not args.untrained
    if trained and not (args.candidate.is_dir() and args.production.is_dir()):
        print(f"bundles missing ({args.candidate}, {args.production}); use --untrained for timings only")
        return 2
    settings = default_evaluation_settings()
    budget = load_catalog().target("x86-cpu").latency_budget_ms.p95
    timings: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="bench-eval-") as tmp_s:
        tmp = Path(tmp_s)
        t = time.perf_counter()
        (tmp / "cand").mkdir()
        (tmp / "prod").mkdir()
        if trained:
            cand_path, cand_contract = _engine_from_bundle(args.candidate, tmp / "cand")
            prod_path, prod_contract = _engine_from_bundle(args.production, tmp / "prod")
        else:
            cand_path, cand_contract = _untrained(tmp / "cand", "0.2.0", 0)
            prod_path, prod_contract = _untrained(tmp / "prod", "0.1.0", 1)
        timings["engine build (both bundles, export + ORT FP32)"] = time.perf_counter() - t

        t0 = time.perf_counter()
        gt = json.loads((args.data / f"{settings.split}.json").read_text())
        replay = json.loads((args.data / "replay_sequences.json").read_text())
        _, _, h, w = cand_contract.input.shape
        size = (int(h), int(w))
        frames, scales = load_frames(
            lambda n: (args.data / n).read_bytes(), [im["file_name"] for im in gt["images"]], size
        )
        r_frames, _ = load_frames(
            lambda n: (args.data / n).read_bytes(), [im["file_name"] for im in replay["images"]], size
        )
        timings["load frames"] = time.perf_counter() - t0
        slices = catalog_slices(load_slices(), gt)
        data = EvalData(
            gt=gt,
            image_ids=[im["id"] for im in gt["images"]],
            frames=frames,
            slices=slices,
            size_hw=size,
            scales=scales,
            replay=replay,
            replay_ids=[im["id"] for im in replay["images"]],
            replay_frames=r_frames,
        )
        cand_engine = open_engine(cand_path, "onnxruntime", cand_contract, args.threads)
        prod_engine = open_engine(prod_path, "onnxruntime", prod_contract, args.threads)
        t = time.perf_counter()
        lat = measure_latency(cand_engine, cand_contract.input.shape[1:])
        timings["latency (60 runs, batch 1)"] = time.perf_counter() - t
        latency = Latency(
            p50_ms=lat["p50_ms"], p95_ms=lat["p95_ms"], source="benchmark", budget_p95_ms=budget
        )
        cand = ModelUnderTest("candidate", cand_contract.version, cand_engine, cand_contract)
        prod = ModelUnderTest("production", prod_contract.version, prod_engine, prod_contract)
        t = time.perf_counter()
        outcome = evaluate_engine(
            cand,
            prod,
            data,
            settings,
            profile=args.profile,
            latency=latency,
            budget_p95_ms=budget,
            log=lambda s: print(f"  {s}", flush=True),
        )
        eval_s = time.perf_counter() - t
        json_bytes(outcome.eval_report)
        full_s = eval_s + timings["load frames"] + timings["latency (60 runs, batch 1)"]
        print(f"full evaluation: {eval_s:.1f} s (+ {timings['load frames']:.1f} s loading frames)")
        for k, v in outcome.timings_s.items():
            print(f"  {k:<28} {v:7.2f} s")

        # COCO step: faster-coco-eval vs pycocotools on the same detections, interleaved rounds.
        records = outcome.candidate_predictions.records()
        fast_t, ref_t = [], []
        diff = 0.0
        for _ in range(args.coco_rounds):
            ft, fm = _coco_step(gt, records, slices, "faster")
            rt, rm = _coco_step(gt, records, slices, "pycocotools")
            fast_t.append(ft)
            ref_t.append(rt)
            diff = max(diff, _max_diff(fm, rm))
        f_med, r_med = statistics.median(fast_t), statistics.median(ref_t)
        speedup = r_med / f_med
        print(
            f"COCO step ({len(slices)} slices, {len(records)} detections): faster-coco-eval {f_med:.2f} s, "
            f"pycocotools {r_med:.2f} s -> {speedup:.1f}x; max |difference| {diff:.1e}"
        )

        gate_rows: list[tuple[str, Any]] = []
        if args.gates:
            gate_rows.append(("candidate vs production", outcome.verdict_preview))
            snap_p = outcome.production_snapshot
            prod_p = outcome.production_predictions
            assert snap_p is not None and prod_p is not None
            gate_cfg = default_gates()
            slice_ids = {s.name: s.image_ids for s in slices}

            def paired(cand_records: list[dict[str, Any]]) -> Any:
                return paired_evidence(
                    gt,
                    cand_records,
                    prod_p.records(),
                    data.image_ids,
                    slice_ids,
                    class_weights=gate_cfg.weighted_map.class_weights,
                    recall_classes=gate_cfg.safety_recall.classes,
                    operating_thresholds=(float(cand_contract.postprocess.score_threshold),) * 2,
                    resamples=gate_cfg.confidence.resamples,
                    seed=gate_cfg.confidence.seed,
                )

            same = evaluate_gates(snap_p, snap_p, latency, budget, evidence=paired(prod_p.records()))
            gate_rows.append(("production vs production", same))
            # The candidate's engine wrapped so that fogged frames come back empty.
            blind = MaskedEngine(
                cand_engine,
                fog_mask(cand_contract.input.normalization),
                cand_contract.postprocess.heatmap_output,
            )
            bp = predict(
                blind, frames, data.image_ids, cand_contract, score_threshold=settings.score_threshold
            )
            b_slices = slice_metrics(gt, bp.records(), slices)
            b_cal = detection_calibration(
                gt, bp, data.image_ids, settings, float(cand_contract.postprocess.score_threshold)
            )
            b_snap = snapshot(cand_contract.version + "-fogblind", b_slices, slices, b_cal)
            verdict = evaluate_gates(b_snap, snap_p, latency, budget, evidence=paired(bp.records()))
            gate_rows.append(("candidate blind in fog vs production", verdict))
            for name, v in gate_rows:
                print(f"gate, {name}: {v.rationale}")

    verdicts = [
        f"full evaluation < 5 min: {'yes' if full_s < 300 else 'NO'} ({full_s:.0f} s)",
        f"COCO step >= 3x pycocotools: {'yes' if speedup >= 3 else 'NO'} ({speedup:.1f}x, identical numbers: "
        f"{'yes' if diff <= 1e-12 else f'NO (max diff {diff:.1e})'})",
    ]
    print("\n".join(verdicts))
    result = {
        "timings_s": {
            **timings,
            "evaluation": eval_s,
            **{f"step {k}": v for k, v in outcome.timings_s.items()},
        },
        "coco": {"faster_s": fast_t, "pycocotools_s": ref_t, "speedup": speedup, "max_diff": diff},
        "gates": {name: v.model_dump() for name, v in gate_rows},
        "AP": outcome.primary.metrics["AP"],
    }
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, default=str))
    if args.write:
        m = outcome.primary.metrics
        pm = outcome.eval_report.get("production_primary") or {}
        rs = outcome.eval_report["robustness_summary"]
        rob = settings.robustness
        lines = [
            *cpu_section_head(
                "Evaluation (CPU)",
                f"{args.threads} ONNX Runtime intra-op threads; other jobs may share the machine",
            ),
            f"- models: candidate {cand_contract.model_name} {cand_contract.version}, production "
            f"{prod_contract.version}{'' if trained else ' (untrained: timings only)'}; x86-cpu/fp32 ORT engines",
            f"- data: {args.data.name}, {settings.split} ({len(gt['images'])} frames), replay ({len(replay['images'])} frames)",
            f"- profile {args.profile}: robustness on {rob.frames} `{rob.base_slice}` frames x {len(rob.corruptions)} "
            f"corruptions x {len(rob.severities)} severities, {len(rob.sensor_faults)} sensor faults, temporal stress, "
            f"{settings.ood.frames} OOD probes, Evidently drift",
            "",
            "| step | seconds |",
            "|---|---|",
            *[f"| {k} | {v:.1f} |" for k, v in timings.items()],
            *[f"| eval: {k} | {v:.1f} |" for k, v in outcome.timings_s.items()],
            f"| **full evaluation (load + latency + evaluate)** | **{full_s:.1f}** |",
            "",
            f"COCO evaluation step ({len(slices)} slices, {len(records)} detections, median of {args.coco_rounds} "
            f"interleaved rounds): faster-coco-eval {f_med:.2f} s, pycocotools {r_med:.2f} s, "
            f"**{speedup:.1f}x**; max |difference| over every number {diff:.1e}.",
            "",
            f"Candidate AP {100 * m['AP']:.1f} (production {100 * pm.get('AP', 0):.1f}), mPC {100 * (rs['mPC'] or 0):.1f}, "
            f"rPC {100 * (rs['rPC'] or 0):.0f}%, p95 {latency.p95_ms:.2f} ms.",
            "",
            *[f"- {v}" for v in verdicts],
            *[f"- gate, {name}: {v.rationale}" for name, v in gate_rows],
        ]
        append_to_benchmarks("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
