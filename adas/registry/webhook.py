"""Signed webhooks: every registry event POSTed in order to one endpoint with an HMAC-SHA256
signature over ``timestamp.body``; deliveries are recorded, so a rerun sends only the rest."""

import hashlib
import hmac
import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable

from adas.registry.config import WebhookPolicy
from adas.registry.models import Event, RegistryError
from adas.registry.store import RegistryStore

SIGNATURE_HEADER = "X-ADAS-Signature-256"
TIMESTAMP_HEADER = "X-ADAS-Timestamp"
EVENT_HEADER = "X-ADAS-Event"
DELIVERY_HEADER = "X-ADAS-Delivery"
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def sign_payload(secret: str, timestamp: str, body: bytes) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"sha256={mac.hexdigest()}"


def verify_signature(
    secret: str, headers: dict[str, str], body: bytes, *, tolerance_s: float = 300, now: float | None = None
) -> bool:
    """What a receiver does: recompute the HMAC over ``timestamp.body`` and compare in constant
    time; reject stale timestamps (replays)."""
    lower = {k.lower(): v for k, v in headers.items()}
    ts = lower.get(TIMESTAMP_HEADER.lower(), "")
    sig = lower.get(SIGNATURE_HEADER.lower(), "")
    try:
        age = abs((now if now is not None else time.time()) - float(ts))
    except ValueError:
        return False
    return age <= tolerance_s and hmac.compare_digest(sign_payload(secret, ts, body), sig)


class WebhookNotifier:
    """Delivers every registry event, in order, to one endpoint; each POST carries an
    HMAC-SHA256 signature. Deliveries are recorded (append-only), so a rerun sends only what
    has not been acknowledged with a 2xx."""

    def __init__(
        self,
        url: str,
        secret: str,
        policy: WebhookPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not secret:
            raise RegistryError("a webhook needs a signing secret (ADAS_REGISTRY_WEBHOOK_SECRET)")
        self.url = url
        self.secret = secret
        self.policy = policy or WebhookPolicy()
        self.sleep = sleep

    def _post(self, event: Event) -> tuple[int | None, str | None]:
        body = json.dumps(event.as_webhook_body(), sort_keys=True).encode()
        ts = str(int(time.time()))
        req = urllib.request.Request(
            self.url,
            data=body,
            method="POST",
            headers={
                "Content-Type": "application/json",
                EVENT_HEADER: f"registry.{event.kind}",
                DELIVERY_HEADER: event.uid,
                TIMESTAMP_HEADER: ts,
                SIGNATURE_HEADER: sign_payload(self.secret, ts, body),
            },
        )
        try:
            with _DIRECT.open(req, timeout=self.policy.timeout_s) as resp:
                return resp.status, None
        except urllib.error.HTTPError as exc:
            return exc.code, f"HTTP {exc.code}"
        except (urllib.error.URLError, OSError) as exc:
            return None, f"{type(exc).__name__}: {exc}"

    def deliver_pending(self, registry: RegistryStore) -> dict[str, int]:
        sent = failed = 0
        for event in registry.undelivered(self.url):
            for attempt in range(1, self.policy.max_attempts + 1):
                status, error = self._post(event)
                ok = status is not None and 200 <= status < 300
                registry.record_delivery(
                    event.id, self.url, attempt=attempt, ok=ok, status_code=status, error=error
                )
                if ok:
                    sent += 1
                    break
                if attempt < self.policy.max_attempts:
                    self.sleep(self.policy.backoff_s * attempt)
            else:
                failed += 1
                break  # keep order: later events wait until this one is acknowledged
        return {"delivered": sent, "failed": failed}


def deliver(notifier: WebhookNotifier | None, registry: RegistryStore) -> dict[str, int]:
    """Send every event not yet acknowledged to the webhook; ``{}`` when none is configured."""
    return notifier.deliver_pending(registry) if notifier is not None else {}
