"""Reading manifest.json and cell.json: the schema version decides how.

- `schema_version` == SCHEMA_VERSION: validated as written (unknown keys rejected);
- absent (version 1, kvbench before typed run contracts): migrated on read (`migrate_v1_*`), so
  an old run directory still reports; it cannot be resumed (its cells' summaries are not kept);
- any other version: one line naming the file and the versions this kvbench reads (UserError,
  exit 2).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from kvbench.errors import UserError
from kvbench.results.cell import (
    CacheProtocol,
    CellInfo,
    CellValidity,
    LevelPlanFacts,
    ScrapeStats,
    WorkingSetReport,
)
from kvbench.results.deployment import ComponentReset, DeploymentFacts, K8sApplyFacts, KvStoreFacts
from kvbench.results.manifest import SCHEMA_VERSION, HostFacts, RunManifest, SystemUnderTest

READABLE_VERSIONS = (1, SCHEMA_VERSION)
M = TypeVar("M", bound=BaseModel)


def read_manifest(path: Path, *, allow_migration: bool = True) -> RunManifest:
    data = _read_json(path)
    version = _version(path, data)
    if version == 1:
        if not allow_migration:
            raise UserError(
                f"{path}: written by an earlier kvbench (schema_version 1); it still reports, "
                "but cannot be resumed: start a new run"
            )
        data = migrate_v1_manifest(data)
    return _validate(RunManifest, data, path)


def read_cell_info(path: Path) -> CellInfo:
    data = _read_json(path)
    if _version(path, data) == 1:
        data = migrate_v1_cell(data)
    return _validate(CellInfo, data, path)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text())
    except OSError as err:
        raise UserError(f"{path}: cannot read ({err.strerror})") from None
    except ValueError as err:
        raise UserError(f"{path}: not JSON ({str(err).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: not a JSON object")
    return data


def _version(path: Path, data: dict[str, Any]) -> int:
    version = data.get("schema_version", 1)
    if version not in READABLE_VERSIONS:
        raise UserError(
            f"{path}: schema_version {version!r} is not one this kvbench reads "
            f"({', '.join(map(str, READABLE_VERSIONS))}); use the kvbench that wrote it"
        )
    return int(version)


def _validate(model: type[M], data: dict[str, Any], path: Path) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(top level)"
        raise UserError(f"{path}: {where}: {first['msg']}") from None


# ----------------------------------------------------------------------------- version 1


def _known(model: type[BaseModel], data: Any) -> dict[str, Any]:
    """The keys of `data` that `model` declares (version 1 allowed any extra key)."""
    if not isinstance(data, dict):
        return {}
    return {key: value for key, value in data.items() if key in model.model_fields}


def _v1_base_scenario(entry: dict[str, Any]) -> str:
    """Version 1 wrote `scenario_name` for runner cells; imports wrote only the label."""
    explicit = entry.get("scenario_name") or entry.get("base_scenario")
    if explicit:
        return str(explicit)
    return re.split(r"[@+\[:{]", str(entry.get("scenario", "")), maxsplit=1)[0]


def _v1_identity(entry: dict[str, Any]) -> dict[str, Any]:
    """Version 1 made every scenario param part of the cell id, so all of them are its identity."""
    return {
        "base_scenario": _v1_base_scenario(entry),
        "swept_params": dict(entry.get("scenario_params") or {}),
    }


def migrate_v1_manifest(data: dict[str, Any]) -> dict[str, Any]:
    out = _known(RunManifest, data)
    sut = data.get("system_under_test") or {}
    extras = {k: v for k, v in sut.items() if k not in SystemUnderTest.model_fields}
    out["system_under_test"] = {
        **_known(SystemUnderTest, sut),
        "details": {**(sut.get("details") or {}), **extras},
    }
    out["host"] = _known(HostFacts, data.get("host"))
    strategy = data.get("strategy", "concurrent")
    out["cells"] = [
        {
            "cell_id": ref["cell_id"],
            "model": ref["model"],
            "scenario": ref["scenario"],
            "level": ref["level"],
            "repeat": ref["repeat"],
            "strategy": ref.get("strategy", strategy),
            "status": ref.get("status", "pending"),
            **_v1_identity(ref),
        }
        for ref in data.get("cells") or []
    ]
    out["schema_version"] = SCHEMA_VERSION
    return out


def migrate_v1_cell(data: dict[str, Any]) -> dict[str, Any]:
    out = _known(CellInfo, data)
    out.update(_v1_identity(data))
    out["summary"] = None  # version 1's keys differ; readers recompute it from the records
    workload = data.get("workload")
    if isinstance(workload, dict) and {"kind", "conversations", "seed"} <= workload.keys():
        capacity = workload.get("capacity")
        out["workload"] = {
            "kind": workload["kind"],
            "conversations": workload["conversations"],
            "seed": workload["seed"],
            "capacity": _known(WorkingSetReport, capacity),
        }
    else:
        out.pop("workload", None)
    level_plan = data.get("level_plan")
    out["level_plan"] = _known(LevelPlanFacts, level_plan) if level_plan else None
    out["deployment"] = _v1_deployment(data.get("deployment"))
    out["cache_protocol"] = _v1_cache_protocol(data.get("cache_protocol"))
    validity = _known(CellValidity, data.get("validity"))
    if "scrape" in validity:
        validity["scrape"] = _known(ScrapeStats, validity["scrape"])
    out["validity"] = validity
    out["schema_version"] = SCHEMA_VERSION
    return out


def _v1_deployment(record: Any) -> dict[str, Any] | None:
    if not isinstance(record, dict) or "base_url" not in record:
        return None
    details = record.get("details") or {}
    facts = _known(DeploymentFacts, details)
    facts.pop("store", None)
    facts.pop("k8s", None)
    facts.pop("notes", None)
    store = details.get("kv_store")
    if isinstance(store, dict) and store.get("kind"):
        facts["store"] = _known(KvStoreFacts, store)
    renamed = {
        "epp_config": "epp_config_path",
        "decision_log": "decision_log_path",
        "logs": "logs_path",
        "vllm_version": "server_version",
        "server_version": "server_version",
    }
    for old, new in renamed.items():
        if details.get(old) is not None:
            facts[new] = str(details[old])
    if details.get("note"):
        facts["notes"] = [str(details["note"])]
    if details.get("namespace"):
        facts["k8s"] = {
            **_known(K8sApplyFacts, details),
            "manifests_path": details.get("manifests"),
        }
    return {
        "base_url": record["base_url"],
        "served_model_name": record.get("served_model_name", ""),
        "facts": facts,
    }


def _v1_cache_protocol(protocol: Any) -> dict[str, Any] | None:
    if not isinstance(protocol, dict) or not protocol:
        return None
    out = _known(CacheProtocol, protocol)
    reset = protocol.get("reset")
    out["reset"] = (
        {
            "components": {
                name: _known(ComponentReset, entry)
                for name, entry in reset.items()
                if isinstance(entry, dict) and "reset" in entry
            }
        }
        if isinstance(reset, dict)
        else None
    )
    return out
