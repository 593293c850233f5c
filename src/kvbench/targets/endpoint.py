"""EndpointTarget: an OpenAI-compatible server that is already running (nothing to start or stop).

up(): GET <url>/v1/models must answer (else TargetError, fast: a few seconds); the served model is
`target.model_name`, or else the card whose id or root matches the experiment's model, or else the
first card. metrics_sources come from `metrics_urls` ("metrics-0", ...). reset_caches() POSTs
/reset_prefix_cache (vLLM serves it only with VLLM_SERVER_DEV_MODE=1; a 404 is reported, not raised).

The helpers `fetch_models` / `max_model_len_of` serve the runner's length check for any target.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kvbench.results.manifest import SystemUnderTest
from kvbench.targets.base import (
    ComponentReset,
    Deployment,
    DeploymentFacts,
    ResetResult,
    TargetError,
)

if TYPE_CHECKING:
    from kvbench.spec.scenarios import ScenarioCatalog

PROBE_TIMEOUT_S = 5.0


def http_json(method: str, url: str, timeout_s: float = PROBE_TIMEOUT_S) -> tuple[int, Any]:
    """(status, parsed JSON or text); raises TargetError when the server cannot be reached at all."""
    request = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return response.status, _decode(response.read())
    except urllib.error.HTTPError as err:
        return err.code, _decode(err.read())
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise TargetError(f"{url}: unreachable ({reason})") from None


def _decode(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return body.decode(errors="replace")[:200]


def fetch_models(base_url: str) -> list[dict]:
    status, body = http_json("GET", base_url.rstrip("/") + "/v1/models")
    if status != 200 or not isinstance(body, dict) or not isinstance(body.get("data"), list):
        raise TargetError(f"{base_url}/v1/models: HTTP {status}, not an OpenAI model list")
    return body["data"]


def max_model_len_of(cards: list[dict], served_model_name: str) -> int | None:
    """vLLM reports `max_model_len` in each model card; None when the server does not say."""
    for card in cards:
        if card.get("id") == served_model_name and isinstance(card.get("max_model_len"), int):
            return card["max_model_len"]
    return None


def pick_served_model(cards: list[dict], wanted: str | None, experiment_model: str) -> str:
    ids = [str(card.get("id")) for card in cards]
    if not ids:
        raise TargetError("the endpoint serves no model (/v1/models is empty)")
    if wanted is not None:
        if wanted not in ids:
            raise TargetError(
                f"target.model_name {wanted!r} is not served (served: {', '.join(ids)})"
            )
        return wanted
    for card in cards:
        if experiment_model in (card.get("id"), card.get("root")):
            return str(card["id"])
    return ids[0]


class EndpointTarget:
    def __init__(self, target_spec, *, run_dir: Path, seed: int = 0):
        self.spec = target_spec
        self.run_dir = Path(run_dir)
        self.seed = seed
        self.base_url = target_spec.url.rstrip("/")
        self.server_version: str | None = None

    def describe(self) -> SystemUnderTest:
        return SystemUnderTest(
            kind="endpoint",
            emulated=False,
            description=f"existing OpenAI-compatible endpoint at {self.base_url} (not started or configured by kvbench)",
            details={
                "url": self.base_url,
                "metrics_urls": list(self.spec.metrics_urls),
                "model_name": self.spec.model_name,
                "server_version": self.server_version,
            },
        )

    def up(
        self,
        model: str,
        scenario: str,
        scenario_params: dict[str, Any],
        *,
        catalog: ScenarioCatalog | None = None,
    ) -> Deployment:
        """The scenario (and the catalog) are labels only: an existing server is not reconfigured."""
        cards = fetch_models(self.base_url)
        served = pick_served_model(cards, self.spec.model_name, model)
        self.server_version = self._version()
        facts = DeploymentFacts(
            max_model_len=max_model_len_of(cards, served),
            server_version=self.server_version,
            notes=["scenario is a label only: an endpoint target cannot reconfigure the server"],
        )
        sources = {f"metrics-{i}": url for i, url in enumerate(self.spec.metrics_urls)}
        return Deployment(
            model=model,
            scenario=scenario,
            served_model_name=served,
            base_url=self.base_url,
            api_urls=[self.base_url],
            metrics_sources=sources,
            facts=facts,
        )

    def _version(self) -> str | None:
        try:
            status, body = http_json("GET", self.base_url + "/version")
        except TargetError:
            return None
        return body.get("version") if status == 200 and isinstance(body, dict) else None

    def reset_caches(self, deployment: Deployment) -> ResetResult:
        """POST /reset_prefix_cache on every API server; a 404/405 means the server does not offer it."""
        result = ResetResult()
        what = "POST /reset_prefix_cache"
        for url in deployment.api_urls or [deployment.base_url]:
            try:
                status, body = http_json("POST", url.rstrip("/") + "/reset_prefix_cache")
            except TargetError as err:
                result.components[url] = ComponentReset(reset=False, what=what, error=str(err))
                continue
            entry = ComponentReset(reset=status == 200, what=what, http_status=status)
            if status in (404, 405):
                entry.note = "not offered (vLLM needs VLLM_SERVER_DEV_MODE=1); the cache stays warm"
            elif status != 200:
                entry.error = str(body)[:200]
            result.components[url] = entry
        return result

    def down(self, deployment: Deployment) -> None:
        return None  # kvbench started nothing
