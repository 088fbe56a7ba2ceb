"""Debian's nginx as the local traffic splitter in front of two Triton servers.

nginx runs in the foreground under our control (``-g 'daemon off;'``, its own prefix under a
work directory, loopback ports only). Every rollout step regenerates the configuration,
checks it with ``nginx -t`` and sends SIGHUP to the master: new workers start with the new
split while the old ones finish their in-flight requests and exit, so no request is dropped
by a switch. Each configuration carries a generation number that every response echoes
(``X-Rollout-Generation``) beside the arm that served it (``X-Canary-Arm``).

Modes:

* ``canary``: ``split_clients`` on ``$request_id`` sends ``weight`` percent of requests to
  the candidate;
* ``ab``: ``split_clients`` on the cohort header (a vehicle id): a stable ``weight`` percent of
  cohorts is served by the candidate;
* ``shadow``: every request is served by production and mirrored to the candidate (nginx
  ``mirror``); the candidate's answers are discarded, its status and timing are logged to
  ``shadow.log``.

In every mode ``/_baseline/<path>`` is served by production whatever the split: the canary
analysis's baseline probes take the same nginx hop as the candidate's requests, so that a busy
nginx worker delays both arms alike.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

Mode = Literal["canary", "ab", "shadow"]
BASELINE_PREFIX = "/_baseline"
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))
# The model-name segment of /v2/models/<name>/... that nginx rewrites to the arm's ensemble: any
# name but ``stats`` (the server's statistics of every model) and the ensemble's own steps
# (``<ensemble>_preprocess``, ``_engine``, ``_postprocess``): a client reading the ensemble's
# configuration (perf_analyzer does) then asks for the steps it names, and must get them, not the
# ensemble again. Those requests reach the arm as asked.
_MODEL = "(?!stats(?:/|$))(?![^/]*_(?:preprocess|engine|postprocess)(?:/|$))[^/]+"


class NginxError(RuntimeError):
    pass


def nginx_binary() -> str:
    path = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if path is None:
        raise NginxError(
            "nginx is not installed: run `bash scripts/setup_system_deps.sh` (Debian: apt-get install -y nginx)"
        )
    return path


def nginx_available() -> bool:
    try:
        nginx_binary()
        return True
    except NginxError:
        return False


@dataclass(frozen=True)
class Split:
    weight: float  # percent of requests (canary) or cohorts (ab) served by the candidate
    mode: Mode = "canary"
    cohort_header: str = "X-Vehicle-Id"
    mirror_percent: float = 100.0  # shadow: share of requests mirrored to the candidate

    def describe(self) -> str:
        if self.mode == "shadow":
            return f"100% production, {self.mirror_percent:g}% mirrored to the candidate"
        unit = "cohorts" if self.mode == "ab" else "requests"
        return f"{self.weight:g}% of {unit} to the candidate"


def _percent(weight: float) -> str:
    return f"{weight:.4f}".rstrip("0").rstrip(".") + "%"


@dataclass(frozen=True)
class ArmModels:
    """The ensemble each arm serves. Clients address one model name; nginx rewrites
    ``/v2/models/<any>/...`` to the arm's own, so a candidate of another family or name (the
    common case: a team switching architecture) is compared against production as it is served."""

    production: str
    candidate: str


def render_config(
    *,
    prefix: Path,
    listen_port: int,
    production_port: int,
    candidate_port: int,
    split: Split,
    generation: int,
    run_as_root: bool,
    models: ArmModels | None = None,
) -> str:
    header_var = "$http_" + split.cohort_header.lower().replace("-", "_")
    if split.mode == "shadow" or split.weight <= 0:
        arm = "map $request_id $arm { default production; }"
    elif split.weight >= 100:
        arm = "map $request_id $arm { default candidate; }"
    else:
        key = '"${request_id}"' if split.mode == "canary" else f'"{header_var}"'
        arm = f"split_clients {key} $arm {{ {_percent(split.weight)} candidate; * production; }}"
    mirror = (
        "            mirror /_shadow;\n            mirror_request_body on;\n"
        if split.mode == "shadow"
        else ""
    )
    take = (
        "map $request_id $mirror_take { default 1; }"
        if split.mirror_percent >= 100
        else f'split_clients "${{request_id}}x" $mirror_take {{ {_percent(split.mirror_percent)} 1; * 0; }}'
    )
    tmp = prefix / "tmp"
    if models is None:
        arm_model, rewrite, shadow_uri, baseline = "", "", "$request_uri", "proxy_pass http://production/;"
    else:
        arm_model = (
            f'map $arm $arm_model {{ candidate "{models.candidate}"; default "{models.production}"; }}\n'
            f'    map $request_uri $candidate_uri {{ "~^/v2/models/{_MODEL}(?<rest>/.*)?$" '
            f'"/v2/models/{models.candidate}$rest"; default $request_uri; }}'
        )
        rewrite = f"            rewrite ^/v2/models/{_MODEL}(/.*)?$ /v2/models/$arm_model$1 break;\n"
        shadow_uri = "$candidate_uri"
        baseline = (
            f"rewrite ^{BASELINE_PREFIX}/v2/models/{_MODEL}(/.*)?$ /v2/models/{models.production}$1 break;\n"
            f"            rewrite ^{BASELINE_PREFIX}(/.*)$ $1 break;\n"
            "            proxy_pass http://production;"
        )
    return f"""# generated by adas.registry.nginx: generation {generation}, {split.describe()}
{"user root root;" if run_as_root else ""}
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
worker_shutdown_timeout 60s;
events {{ worker_connections 2048; }}
http {{
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    client_max_body_size 64m;
    client_body_buffer_size 8m;
    proxy_buffer_size 64k;
    proxy_buffers 32 64k;
    proxy_read_timeout 120s;
    log_format rollout '$msec $arm $status $upstream_status $request_time $upstream_response_time gen={generation}';
    log_format shadow '$msec shadow $status $upstream_status $request_time $upstream_response_time gen={generation}';
    upstream production {{ server 127.0.0.1:{production_port}; keepalive 16; }}
    upstream candidate {{ server 127.0.0.1:{candidate_port}; keepalive 16; }}
    {arm}
    {take}
    {arm_model}
    server {{
        listen 127.0.0.1:{listen_port};
        access_log {prefix}/access.log rollout;
        location / {{
{mirror}{rewrite}            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_pass http://$arm;
            add_header X-Canary-Arm $arm always;
            add_header X-Rollout-Generation {generation} always;
        }}
        location = /_shadow {{
            internal;
            log_subrequest on;
            access_log {prefix}/shadow.log shadow;
            if ($mirror_take = 0) {{ return 204; }}
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_pass http://candidate{shadow_uri};
        }}
        location {BASELINE_PREFIX}/ {{
            access_log off;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            {baseline}
            add_header X-Canary-Arm baseline always;
            add_header X-Rollout-Generation {generation} always;
        }}
        location = /_rollout/health {{
            access_log off;
            add_header X-Rollout-Generation {generation} always;
            return 200 "generation {generation}\\n";
        }}
    }}
}}
"""


class NginxSplitter:
    """Start, reconfigure (graceful reload) and stop one foreground nginx."""

    def __init__(
        self,
        workdir: Path,
        listen_port: int,
        production_port: int,
        candidate_port: int,
        models: ArmModels | None = None,
    ) -> None:
        self.prefix = Path(workdir).resolve()
        self.models = models
        self.listen_port = listen_port
        self.production_port = production_port
        self.candidate_port = candidate_port
        self.generation = -1
        self.split: Split | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._stderr: Any = None
        self.reloads: list[dict[str, float]] = []

    @property
    def conf(self) -> Path:
        return self.prefix / "nginx.conf"

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.listen_port}"

    @property
    def pid(self) -> int | None:
        """The master's pid (its workers share its process group), None when not running."""
        return self._proc.pid if self._proc is not None else None

    def _write(self, split: Split, generation: int) -> None:
        for d in ("tmp/body", "tmp/proxy", "tmp/fastcgi", "tmp/uwsgi", "tmp/scgi", "logs"):
            (self.prefix / d).mkdir(parents=True, exist_ok=True)
        text = render_config(
            prefix=self.prefix,
            listen_port=self.listen_port,
            production_port=self.production_port,
            candidate_port=self.candidate_port,
            split=split,
            generation=generation,
            run_as_root=os.geteuid() == 0,
            models=self.models,
        )
        tmp = self.conf.with_name(".nginx.conf.tmp")
        tmp.write_text(text)
        check = subprocess.run(
            [
                nginx_binary(),
                "-t",
                "-q",
                "-p",
                str(self.prefix),
                "-c",
                str(tmp),
                "-e",
                str(self.prefix / "error.log"),
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
        if check.returncode != 0:
            raise NginxError(f"generated nginx configuration is invalid:\n{check.stderr}\n{text}")
        os.replace(tmp, self.conf)

    def start(self, split: Split) -> None:
        self.generation = 0
        self._write(split, self.generation)
        self.split = split
        self._stderr = open(self.prefix / "stderr.log", "wb")  # noqa: SIM115 - closed in stop()
        self._proc = subprocess.Popen(
            [
                nginx_binary(),
                "-p",
                str(self.prefix),
                "-c",
                str(self.conf),
                "-e",
                str(self.prefix / "error.log"),
                "-g",
                "daemon off;",
            ],
            stdout=subprocess.DEVNULL,
            stderr=self._stderr,
            start_new_session=True,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise NginxError(f"nginx exited with {self._proc.returncode}: {self._log_tail()}")
            if self.served_generation() == 0:
                return
            time.sleep(0.05)
        self.stop()
        raise NginxError(f"nginx did not answer on {self.url}: {self._log_tail()}")

    def _log_tail(self) -> str:
        out = []
        for name in ("stderr.log", "error.log"):
            p = self.prefix / name
            if p.exists():
                out += p.read_text(errors="replace").splitlines()[-10:]
        return "\n".join(out)

    def served_generation(self) -> int | None:
        try:
            with _DIRECT.open(f"http://{self.url}/_rollout/health", timeout=1.0) as resp:
                return int(resp.headers.get("X-Rollout-Generation", "-1"))
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError, ValueError):
            return None

    def workers(self) -> set[int]:
        if self._proc is None:
            return set()
        master = self._proc.pid
        out = set()
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == master:
                out.add(int(stat.parent.name))
        return out

    def apply(self, split: Split, drain_timeout_s: float = 30.0) -> dict[str, float]:
        """Switch to ``split``: write, check, SIGHUP; return once the new generation answers
        and every old worker has finished its in-flight requests and exited."""
        if self._proc is None or self._proc.poll() is not None:
            raise NginxError("nginx is not running")
        generation = self.generation + 1
        old_workers = self.workers()
        t0 = time.monotonic()
        self._write(split, generation)
        self._proc.send_signal(signal.SIGHUP)
        while self.served_generation() != generation:
            if time.monotonic() - t0 > drain_timeout_s:
                raise NginxError(f"nginx did not load generation {generation}: {self._log_tail()}")
            time.sleep(0.01)
        t_new = time.monotonic()
        while old_workers & self.workers():
            if time.monotonic() - t0 > drain_timeout_s:
                raise NginxError(f"old nginx workers still serving after {drain_timeout_s:g} s")
            time.sleep(0.01)
        t_drained = time.monotonic()
        self.generation = generation
        self.split = split
        timing = {
            "generation": float(generation),
            "signaled_at": t0,
            "new_config_s": t_new - t0,
            "drained_s": t_drained - t0,
        }
        self.reloads.append(timing)
        return timing

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGQUIT)  # graceful: finish in-flight requests
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None

    def __enter__(self) -> NginxSplitter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
