"""Endpoint health: telling a dead engine from a slow one, and re-admitting with hysteresis.

Contract (per endpoint; `HealthPolicy` holds the thresholds):
- DEAD -> ejected at once: the connection is refused or reset, by a scrape or by the proxy
  (`connect_failed`). Nothing listens, so no request routed there could succeed.
- HTTP errors from /metrics (a non-200 status): ejected after `failures_to_eject` in a row.
- SLOW -> kept, degraded: a scrape that times out means the engine (or this router's own loop)
  is busy, not dead. The endpoint stays routable with its last metrics, and its total score is
  multiplied by `slow_score_factor` while its latest scrape timed out, so the picker prefers
  responsive engines without taking the loaded one away (no 503 under load). Only an endpoint
  with no successful scrape for `unresponsive_eject_s` (hung, e.g. SIGSTOPped) is ejected.
- Re-admission: an endpoint that was ejected needs `readmit_successes` successful scrapes in a row
  (hysteresis: one lucky scrape of a flapping engine does not bring it back). At start-up the
  first successful scrape admits an endpoint (it was never ejected).
- Counters (ejections by reason, re-admissions, slow scrapes) are cumulative for the router's
  life; the router exports them on /metrics so a run can count degradation per cell.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class EjectReason(str, enum.Enum):
    CONNECT = "connect"  # refused / reset: nothing listening
    HTTP_STATUS = "http_status"  # /metrics answered, with an error status, repeatedly
    UNRESPONSIVE = "unresponsive"  # no successful scrape for unresponsive_eject_s


@dataclass(frozen=True)
class HealthPolicy:
    failures_to_eject: int = 3
    slow_score_factor: float = 0.5
    unresponsive_eject_s: float = 15.0
    readmit_successes: int = 3


@dataclass
class EndpointHealth:
    """The health state machine of one endpoint (times are the pool clock's seconds)."""

    policy: HealthPolicy = field(default_factory=HealthPolicy)
    ready: bool = False
    slow: bool = False  # the latest scrape timed out
    ever_ready: bool = False
    consecutive_http_failures: int = 0
    consecutive_successes: int = 0
    last_ok_s: float | None = None
    created_s: float | None = None
    ejections: dict[str, int] = field(default_factory=dict)  # reason -> count
    readmissions: int = 0
    slow_scrapes: int = 0

    @property
    def ejections_total(self) -> int:
        return sum(self.ejections.values())

    @property
    def score_factor(self) -> float:
        """What the endpoint's total score is multiplied by: 1.0 unless it is slow."""
        return self.policy.slow_score_factor if self.slow else 1.0

    # ------------------------------------------------------------------ transitions
    def scrape_ok(self, now_s: float) -> bool:
        """Returns True when this scrape (re-)admitted the endpoint."""
        self.slow = False
        self.consecutive_http_failures = 0
        self.consecutive_successes += 1
        self.last_ok_s = now_s
        if self.ready:
            return False
        if self.ever_ready and self.consecutive_successes < self.policy.readmit_successes:
            return False
        if self.ever_ready:
            self.readmissions += 1
        self.ready = self.ever_ready = True
        return True

    def scrape_timed_out(self, now_s: float) -> EjectReason | None:
        self.slow = True
        self.slow_scrapes += 1
        self.consecutive_successes = 0
        since = self.last_ok_s if self.last_ok_s is not None else self.created_s
        if since is not None and now_s - since >= self.policy.unresponsive_eject_s:
            return self._eject(EjectReason.UNRESPONSIVE)
        return None

    def request_timed_out(self) -> None:
        """A proxied connection was not accepted in time: slow until the next good scrape."""
        self.slow = True

    def scrape_http_error(self) -> EjectReason | None:
        self.consecutive_successes = 0
        self.consecutive_http_failures += 1
        if self.consecutive_http_failures >= self.policy.failures_to_eject:
            return self._eject(EjectReason.HTTP_STATUS)
        return None

    def connect_failed(self) -> EjectReason | None:
        self.consecutive_successes = 0
        return self._eject(EjectReason.CONNECT)

    def _eject(self, reason: EjectReason) -> EjectReason | None:
        """Eject; returns the reason only when the endpoint was ready (a new ejection)."""
        self.slow = False
        if not self.ready:
            return None
        self.ready = False
        self.ejections[reason.value] = self.ejections.get(reason.value, 0) + 1
        return reason
