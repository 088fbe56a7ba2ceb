"""Replay recorded requests (dataset frames) against the local split, and record every answer.

Each client thread sends Triton HTTP/REST v2 inference requests (binary tensor extension) to
nginx, one connection per request, so that a configuration switch never catches a request on
a keep-alive connection that nginx is closing. Every request is counted: sent, answered, and
failed (a connection error or a non-200 answer); the arm (``X-Canary-Arm``) and configuration
generation (``X-Rollout-Generation``) that served it are recorded with its latency.

Production's answer to each recorded frame becomes the reference; the candidate's answer to
the same frame is compared with it (detections matched by class at IoU >= 0.5): the
disagreement ``1 - F1`` is the safety proxy the analysis reads.
"""

from __future__ import annotations

import http.client
import itertools
import random
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from adas.detector.postprocess import box_iou
from adas.detector.tracking import greedy_match
from adas.packaging.inference_config import ENSEMBLE_OUTPUTS, FRAMES_INPUT
from adas.registry.nginx import BASELINE_PREFIX


@dataclass(frozen=True)
class Answer:
    boxes: np.ndarray  # [n, 4]
    classes: np.ndarray  # [n]
    scores: np.ndarray | None = None  # [n]; None: every detection counts as confident

    def confident(self, min_score: float) -> Answer:
        if self.scores is None or min_score <= 0:
            return self
        keep = self.scores >= min_score
        return Answer(self.boxes[keep], self.classes[keep], self.scores[keep])


@dataclass
class Sample:
    t_start: float
    t_end: float
    arm: str  # production | candidate | shadow | baseline (probe) | unknown
    generation: int
    ok: bool
    status: int
    frame: int
    disagreement: float | None = None
    missed: dict[int, int] = field(default_factory=dict)
    extra: dict[int, int] = field(default_factory=dict)
    error: str | None = None

    @property
    def latency_ms(self) -> float:
        return (self.t_end - self.t_start) * 1000.0


def compare(
    candidate: Answer,
    production: Answer,
    iou: float = 0.5,
    *,
    min_score: float = 0.0,
    mode: str = "symmetric",
) -> tuple[float, dict[int, int], dict[int, int]]:
    """The candidate against production on one frame, over detections scored ``>= min_score``
    (matched by class at IoU >= ``iou``). Returns ``(disagreement, missed per class, extra per
    class)``; ``mode="misses"``: the share of production's detections the candidate does not
    reproduce (a miss can hide an obstacle); ``"symmetric"``: ``1 - F1`` (misses and extras)."""
    candidate, production = candidate.confident(min_score), production.confident(min_score)
    nc, np_ = len(candidate.classes), len(production.classes)
    if np_ == 0 and (nc == 0 or mode == "misses"):
        return 0.0, {}, dict(Counter(int(c) for c in candidate.classes))
    matched_c = np.zeros(nc, bool)
    matched_p = np.zeros(np_, bool)
    if nc and np_:
        same = production.classes[:, None] == candidate.classes[None, :]
        ious = np.where(same, box_iou(production.boxes, candidate.boxes), 0.0)
        for pi, ci in greedy_match(ious, iou):
            matched_p[pi] = matched_c[ci] = True
    m = int(matched_p.sum())
    missed = Counter(int(c) for c in production.classes[~matched_p])
    extra = Counter(int(c) for c in candidate.classes[~matched_c])
    value = 1.0 - m / np_ if mode == "misses" else 1.0 - 2.0 * m / (nc + np_)
    return value, dict(missed), dict(extra)


class RequestCodec:
    """Pre-encoded request bodies (one per recorded frame) and response decoding."""

    def __init__(self, frames: np.ndarray) -> None:
        import tritonclient.http as thttp  # heavy; only the canary needs it

        self._thttp = thttp
        self.bodies: list[tuple[bytes, int]] = []
        for frame in frames:
            inp = thttp.InferInput(FRAMES_INPUT, [1, *frame.shape], "UINT8")
            inp.set_data_from_numpy(np.ascontiguousarray(frame[None]), binary_data=True)
            outs = [thttp.InferRequestedOutput(n, binary_data=True) for n in ENSEMBLE_OUTPUTS]
            body, json_size = thttp.InferenceServerClient.generate_request_body([inp], outputs=outs)
            self.bodies.append((body, int(json_size) if json_size is not None else len(body)))

    def decode(self, data: bytes, header_length: str | None) -> Answer:
        result = self._thttp.InferenceServerClient.parse_response_body(
            data, header_length=int(header_length) if header_length else None
        )
        n = int(result.as_numpy("num_detections")[0])
        return Answer(
            result.as_numpy("boxes")[0, :n].copy(),
            result.as_numpy("classes")[0, :n].copy(),
            result.as_numpy("scores")[0, :n].copy(),
        )


class ReplayDriver:
    """``concurrency`` client threads replaying the frames in a loop until :meth:`stop`."""

    def __init__(
        self,
        host: str,
        port: int,
        model: str,
        codec: RequestCodec,
        *,
        concurrency: int = 4,
        cohort_header: str = "X-Vehicle-Id",
        cohorts: int = 32,
        shadow_diff: tuple[str, int] | None = None,
        shadow_sample_rate: float = 0.25,
        timeout_s: float = 60.0,
        min_score: float = 0.0,
        disagreement_mode: str = "symmetric",
        direct_model: str | None = None,
    ) -> None:
        self.host, self.port, self.model = host, port, model
        # The name the candidate's own server knows, for requests sent to it directly (warm-up,
        # shadow diffs): through nginx any name reaches each arm's ensemble.
        self.direct_model = direct_model or model
        self.codec = codec
        self.concurrency = concurrency
        self.cohort_header = cohort_header
        self.cohorts = cohorts
        self.shadow_diff = shadow_diff
        self.shadow_sample_rate = shadow_sample_rate
        self.baseline_probes = False
        self.timeout_s = timeout_s
        self.min_score = min_score
        self.disagreement_mode = disagreement_mode
        self.samples: list[Sample] = []
        self.reference: dict[int, Answer] = {}
        self._stop = threading.Event()
        self._counter = itertools.count()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._rng = random.Random(0)
        # (start, rate) while paced: request k of the pace is due at start + k / rate.
        self._pace: tuple[float, float] | None = None
        self._slots = itertools.count()

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        self._stop.clear()
        for i in range(self.concurrency):
            t = threading.Thread(target=self._loop, name=f"replay-{i}", daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=self.timeout_s + 5)
        self._threads = []

    def set_shadow(self, target: tuple[str, int] | None) -> None:
        self.shadow_diff = target

    def pace(self, rate_rps: float | None) -> None:
        """Offer ``rate_rps`` requests a second in all from now on, as a fleet's traffic arrives
        whatever the model's speed (``None``: each client sends its next request as soon as the
        last is answered, i.e. as many as the servers can take). A server slower than the rate
        meets at most ``concurrency`` requests in flight, and the late ones are sent at once."""
        if rate_rps is not None and not rate_rps > 0:
            raise ValueError(f"a paced rate must be > 0 requests/s, got {rate_rps}")
        with self._lock:
            self._pace = None if rate_rps is None else (time.monotonic(), float(rate_rps))
            self._slots = itertools.count()

    def set_baseline_probes(self, enabled: bool) -> None:
        """Send every request's frame, at the same moment, also to production through nginx's
        ``/_baseline/`` route, recorded as arm ``baseline`` and not counted as client traffic.

        When the candidate serves most requests, production's own arm is idle or gone: these
        probes give the analysis a baseline over the same window, on the same frames, under the
        same concurrency and nginx hop, and (each pair in flight together) through the same
        bursts of host load."""
        self.baseline_probes = enabled

    # ------------------------------------------------------------------ requests
    def _post(
        self, host: str, port: int, frame: int, prefix: str = "", model: str | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        body, json_size = self.codec.bodies[frame]
        conn = http.client.HTTPConnection(host, port, timeout=self.timeout_s)
        try:
            conn.request(
                "POST",
                f"{prefix}/v2/models/{model or self.model}/infer",
                body=body,
                headers={
                    "Inference-Header-Content-Length": str(json_size),
                    "Content-Type": "application/octet-stream",
                    "Connection": "close",
                    self.cohort_header: f"veh-{(frame * 7) % self.cohorts:03d}",
                },
            )
            resp = conn.getresponse()
            data = resp.read()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
        finally:
            conn.close()

    def _one(self, frame_seq: int) -> None:
        n = len(self.codec.bodies)
        frame = frame_seq % n
        probe: threading.Thread | None = None
        if self.baseline_probes:
            probe = threading.Thread(target=self._probe_baseline, args=(frame,))
            probe.start()
        try:
            self._request(frame)
        finally:
            if probe is not None:
                probe.join()

    def _request(self, frame: int) -> None:
        t0 = time.monotonic()
        try:
            status, headers, data = self._post(self.host, self.port, frame)
        except Exception as exc:  # connection refused/reset, timeout: a dropped request
            self.samples.append(
                Sample(
                    t0, time.monotonic(), "unknown", -1, False, 0, frame, error=f"{type(exc).__name__}: {exc}"
                )
            )
            return
        t1 = time.monotonic()
        arm = headers.get("x-canary-arm", "unknown")
        gen = int(headers.get("x-rollout-generation", "-1"))
        sample = Sample(t0, t1, arm, gen, status == 200, status, frame)
        if status == 200:
            try:
                answer = self.codec.decode(data, headers.get("inference-header-content-length"))
            except Exception as exc:
                sample.ok, sample.error = False, f"undecodable answer: {exc}"
                self.samples.append(sample)
                return
            if arm == "production":
                self.reference.setdefault(frame, answer)
            elif arm == "candidate" and frame in self.reference:
                sample.disagreement, sample.missed, sample.extra = self._compare(answer, frame)
        else:
            sample.error = data[:200].decode(errors="replace")
        self.samples.append(sample)
        if self.shadow_diff is not None and arm == "production" and status == 200:
            with self._lock:
                take = self._rng.random() < self.shadow_sample_rate
            if take:
                self._shadow(frame)

    def _compare(self, answer: Answer, frame: int) -> tuple[float, dict[int, int], dict[int, int]]:
        return compare(answer, self.reference[frame], min_score=self.min_score, mode=self.disagreement_mode)

    def _shadow(self, frame: int) -> None:
        assert self.shadow_diff is not None
        t0 = time.monotonic()
        try:
            status, headers, data = self._post(*self.shadow_diff, frame, model=self.direct_model)
        except Exception as exc:
            self.samples.append(Sample(t0, time.monotonic(), "shadow", -1, False, 0, frame, error=str(exc)))
            return
        sample = Sample(t0, time.monotonic(), "shadow", -1, status == 200, status, frame)
        if status == 200 and frame in self.reference:
            answer = self.codec.decode(data, headers.get("inference-header-content-length"))
            sample.disagreement, sample.missed, sample.extra = self._compare(answer, frame)
        self.samples.append(sample)

    def _probe_baseline(self, frame: int) -> None:
        t0 = time.monotonic()
        try:
            status, _, _ = self._post(self.host, self.port, frame, prefix=BASELINE_PREFIX)
        except Exception as exc:
            self.samples.append(Sample(t0, time.monotonic(), "baseline", -1, False, 0, frame, error=str(exc)))
            return
        self.samples.append(Sample(t0, time.monotonic(), "baseline", -1, status == 200, status, frame))

    def warm_up(self, target: tuple[str, int], rounds: int = 2) -> dict[str, Any]:
        """Send every recorded frame ``rounds`` times straight to ``target`` (not counted), from
        ``concurrency`` clients at once: the server then meets the batch sizes that dynamic
        batching forms under the full load of a 100% step (a first run of each batch shape is
        slow) before the analysis times it."""
        t0 = time.monotonic()
        frames = [f for _ in range(rounds) for f in range(len(self.codec.bodies))]
        with ThreadPoolExecutor(self.concurrency, thread_name_prefix="warm-up") as pool:
            statuses = list(
                pool.map(lambda frame: self._post(*target, frame, model=self.direct_model)[0], frames)
            )
        return {
            "requests": len(frames),
            "failures": sum(status != 200 for status in statuses),
            "seconds": round(time.monotonic() - t0, 2),
        }

    def _loop(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                seq = next(self._counter)
                due = None if self._pace is None else self._pace[0] + next(self._slots) / self._pace[1]
            if due is not None and self._stop.wait(max(0.0, due - time.monotonic())):
                return
            self._one(seq)

    # ------------------------------------------------------------------ counts
    def counts(self) -> dict[str, Any]:
        served = [s for s in self.samples if s.arm not in ("shadow", "baseline")]
        by_arm = Counter(s.arm for s in served)
        failed = [s for s in served if not s.ok]
        return {
            "sent": len(served),
            "ok": len(served) - len(failed),
            "failed": len(failed),
            "by_arm": dict(by_arm),
            "failed_by_arm": dict(Counter(s.arm for s in failed)),
            "shadow_diffs": sum(1 for s in self.samples if s.arm == "shadow"),
            "baseline_probes": sum(1 for s in self.samples if s.arm == "baseline"),
            "errors": sorted({s.error or f"HTTP {s.status}" for s in failed})[:5],
        }


class AccessLogTail:
    """Server-side samples from nginx's access logs (``rollout`` / ``shadow`` formats): the
    upstream's own response time, so that a mirrored candidate is compared with production
    on equal terms (both timed by nginx, neither waiting on the other)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.position = 0
        self.samples: list[Sample] = []
        # nginx logs wall-clock $msec; the controller works in monotonic time.
        self._offset = time.time() - time.monotonic()

    def poll(self) -> list[Sample]:
        if not self.path.exists():
            return []
        with self.path.open("rb") as f:
            f.seek(self.position)
            chunk = f.read()
        complete = chunk.rfind(b"\n") + 1
        self.position += complete
        new = []
        for line in chunk[:complete].decode(errors="replace").splitlines():
            parts = line.split()
            if len(parts) < 7:
                continue
            try:
                end = float(parts[0]) - self._offset
                upstream = [float(x) for x in parts[5].replace(",", " ").split() if x not in ("-", ":")]
                generation = int(parts[6].removeprefix("gen="))
            except ValueError:
                continue
            if parts[2] == "204" and parts[3] == "-":
                continue  # a mirror subrequest that was sampled out (never proxied)
            latency = upstream[-1] if upstream else float(parts[4])
            ok = parts[2] == "200" and parts[3].split(",")[-1].strip() == "200"
            new.append(Sample(end - latency, end, parts[1], generation, ok, int(parts[2]), -1))
        self.samples.extend(new)
        return new
