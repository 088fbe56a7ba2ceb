"""The canary's replay clients at a paced rate: a fleet's traffic does not slow down for a slower
model, so the local canary offers a fixed rate once production's capacity is measured."""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest

from adas.config_errors import ConfigError
from adas.registry.config import POLICY_FILE, load_policy
from adas.registry.traffic import ReplayDriver


class _Bodies:
    """The one thing the driver reads of a codec before an answer arrives: request bodies."""

    bodies: ClassVar[list[tuple[bytes, int]]] = [(b"{}", 2)]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _drive(rate: float | None, seconds: float) -> list[float]:
    """Start offsets of the requests sent in ``seconds`` at ``rate`` (None: unpaced)."""
    # Nothing listens: every request fails at once, so only the pacing bounds the rate.
    driver = ReplayDriver("127.0.0.1", _closed_port(), "m", _Bodies(), concurrency=4)  # type: ignore[arg-type]
    driver.pace(rate)
    start = time.monotonic()
    driver.start()
    time.sleep(seconds)
    driver.stop()
    return sorted(s.t_start - start for s in driver.samples)


def test_paced_clients_never_send_a_request_before_its_slot() -> None:
    rate = 40.0
    starts = _drive(rate, 1.0)
    assert 20 <= len(starts) <= rate * 1.0 + 2, len(starts)
    # Request k of the pace is due k / rate seconds after pacing began (a little clock slack).
    lateness = np.asarray(starts) - np.arange(len(starts)) / rate
    assert (lateness > -0.005).all(), lateness.min()


def test_unpaced_clients_send_as_fast_as_they_are_answered() -> None:
    starts = _drive(None, 0.5)
    assert len(starts) > 200, len(starts)


def test_a_paced_rate_must_be_positive() -> None:
    driver = ReplayDriver("127.0.0.1", _closed_port(), "m", _Bodies())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="paced rate must be > 0"):
        driver.pace(0.0)


def test_load_fraction_is_validated_with_its_field(tmp_path: Path) -> None:
    bad = tmp_path / "registry.yaml"
    bad.write_text(POLICY_FILE.read_text().replace("load_fraction: 0.5", "load_fraction: 1.5"))
    with pytest.raises(ConfigError, match=r"rollout\.local\.load_fraction"):
        load_policy(bad)
    assert load_policy().rollout.local.load_fraction == 0.5
