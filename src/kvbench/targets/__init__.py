"""Systems under test. `build_target` picks the implementation named by the spec's `target.kind`.

Each kind lives in its own module and is imported only when used, so a missing optional
dependency of one target never breaks the others.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from kvbench.errors import UserError
from kvbench.targets.base import Deployment, Target, TargetError

_TARGET_CLASSES = {
    "endpoint": "kvbench.targets.endpoint:EndpointTarget",
    "emulated": "kvbench.targets.emulated:EmulatedTarget",
    "simulated": "kvbench.targets.simulated:SimulatedTarget",
    "vllm": "kvbench.targets.vllm:VllmTarget",
    "k8s": "kvbench.targets.k8s:K8sTarget",
}


def build_target(target_spec: Any, *, run_dir: Path, seed: int = 0) -> Target:
    """Construct the target for `target_spec` (a member of spec.experiment.TargetSpec).

    Every target class takes `(target_spec, run_dir=..., seed=...)`; `run_dir` is where it may keep
    logs (under `run_dir/logs/`)."""
    path = _TARGET_CLASSES.get(target_spec.kind)
    if path is None:
        raise UserError(f"target.kind: unknown target kind {target_spec.kind!r}")
    module_name, class_name = path.split(":")
    module = importlib.import_module(module_name)
    return getattr(module, class_name)(target_spec, run_dir=Path(run_dir), seed=seed)


__all__ = ["Deployment", "Target", "TargetError", "build_target"]
