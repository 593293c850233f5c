"""llm-d `EndpointPickerConfig` YAML -> typed plugin specs and scheduling profiles.

Contract: configs written for llm-d (GIE v1.2 loader + llm-d-inference-scheduler v0.4 plugins) load
unchanged. Keys the loader knows but kvbench does not emulate (`dataLayer`, `featureGates`,
tokenizer plugins, profile handlers, filters that pass every decode pod) are accepted and have no
effect. An unknown plugin type, an unknown or ill-typed parameter of an emulated plugin, or a
pluginRef to a plugin that is not declared raises a one-line `UserError` naming the plugin and field.

Defaults follow the Go loader: a plugin's name defaults to its type, a profile plugin's weight to 1,
and a `max-score-picker` is added to a profile that has no picker.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from kvbench.errors import UserError

API_VERSION = "inference.networking.x-k8s.io/v1alpha1"
KIND = "EndpointPickerConfig"

SCORER_TYPES = {
    "queue-scorer",
    "kv-cache-utilization-scorer",
    "active-request-scorer",
    "load-aware-scorer",
    "prefix-cache-scorer",
    "precise-prefix-cache-scorer",
}
PICKER_TYPES = {"max-score-picker"}
# Plugins llm-d configs carry that do not change routing among a pool of decode engines.
PASSIVE_TYPES = {
    "single-profile-handler",
    "decode-filter",
    "tokenizer",
    "endpoint-notification-source",
}

# Allowed parameters per emulated type: name -> accepted Python types. Nested objects are checked
# by the plugin that owns them (precise scorer) so that llm-d keys kvbench ignores still load.
_NUM = (int, float)
PARAMETER_TYPES: dict[str, dict[str, tuple[type, ...]]] = {
    "queue-scorer": {},
    "kv-cache-utilization-scorer": {},
    "active-request-scorer": {
        "requestTimeout": (str, int),
        "idleThreshold": _NUM,
        "maxBusyScore": _NUM,
    },
    "load-aware-scorer": {"threshold": (int,)},
    "prefix-cache-scorer": {
        "autoTune": (bool,),
        "blockSize": (int,),
        "maxPrefixBlocksToMatch": (int,),
        "lruCapacityPerServer": (int,),
        "hashBlockSize": (int,),
    },
    "precise-prefix-cache-scorer": {
        "tokenProcessorConfig": (dict,),
        "indexerConfig": (dict,),
        "kvEventsConfig": (dict,),
        "speculativeIndexing": (bool,),
        "speculativeTTL": _NUM,
    },
    "max-score-picker": {"maxNumOfEndpoints": (int,)},
}


@dataclass(frozen=True)
class PluginSpec:
    type: str
    name: str
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ProfilePlugin:
    plugin_ref: str
    weight: float = 1.0


@dataclass(frozen=True)
class SchedulingProfile:
    name: str
    plugins: list[ProfilePlugin]


@dataclass(frozen=True)
class EppConfig:
    source: str  # file path or "<string>", for error messages
    plugins: dict[str, PluginSpec]  # by name
    profiles: list[SchedulingProfile]

    def default_profile(self) -> SchedulingProfile:
        """kvbench runs one profile (single-profile-handler): `default` if present, else the first."""
        for profile in self.profiles:
            if profile.name == "default":
                return profile
        return self.profiles[0]


def load_config_file(path: str | Path) -> EppConfig:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise UserError(f"--config {path}: cannot read ({err.strerror})") from None
    return load_config_text(text, str(path))


def load_config_text(text: str, source: str = "<string>") -> EppConfig:
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise UserError(f"{source}: not valid YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(document, dict):
        raise UserError(f"{source}: expected an EndpointPickerConfig mapping")
    _check_header(document, source)
    plugins = _parse_plugins(document.get("plugins"), source)
    profiles = _parse_profiles(document.get("schedulingProfiles"), plugins, source)
    return EppConfig(source=source, plugins=plugins, profiles=profiles)


def _check_header(document: dict, source: str) -> None:
    kind = document.get("kind", KIND)
    if kind != KIND:
        raise UserError(f"{source}: kind is {kind!r}, expected {KIND!r}")
    api_version = document.get("apiVersion", API_VERSION)
    if not str(api_version).startswith("inference.networking.x-k8s.io/"):
        raise UserError(
            f"{source}: apiVersion {api_version!r} is not inference.networking.x-k8s.io/*"
        )


def _parse_plugins(raw: Any, source: str) -> dict[str, PluginSpec]:
    if not isinstance(raw, list) or not raw:
        raise UserError(f"{source}: plugins must be a non-empty list")
    plugins: dict[str, PluginSpec] = {}
    for index, entry in enumerate(raw):
        if not isinstance(entry, dict) or "type" not in entry:
            raise UserError(f"{source}: plugins[{index}] needs a 'type'")
        plugin_type = str(entry["type"])
        name = str(entry.get("name") or plugin_type)
        parameters = entry.get("parameters") or {}
        if not isinstance(parameters, dict):
            raise UserError(f"{source}: plugin {name}: parameters must be a mapping")
        _check_plugin(plugin_type, name, parameters, source)
        if name in plugins:
            raise UserError(f"{source}: plugin name {name!r} is declared twice")
        plugins[name] = PluginSpec(type=plugin_type, name=name, parameters=parameters)
    return plugins


def _check_plugin(plugin_type: str, name: str, parameters: dict, source: str) -> None:
    if plugin_type in PASSIVE_TYPES:
        return
    allowed = PARAMETER_TYPES.get(plugin_type)
    if allowed is None:
        known = sorted(SCORER_TYPES | PICKER_TYPES | PASSIVE_TYPES)
        raise UserError(
            f"{source}: plugin {name}: unknown type {plugin_type!r} (kvbench emulates {', '.join(known)})"
        )
    for key, value in parameters.items():
        if key not in allowed:
            raise UserError(f"{source}: plugin {name}: unknown parameter {key!r} for {plugin_type}")
        accepted = allowed[key]
        if (
            value is None
            or isinstance(value, bool)
            and bool not in accepted
            or not isinstance(value, accepted)
        ):
            names = "/".join(t.__name__ for t in accepted)
            raise UserError(
                f"{source}: plugin {name}: parameter {key} must be {names}, got {value!r}"
            )


def _parse_profiles(
    raw: Any, plugins: dict[str, PluginSpec], source: str
) -> list[SchedulingProfile]:
    if raw is None:  # GIE builds a default profile of every declared plugin
        raw = [{"name": "default", "plugins": [{"pluginRef": name} for name in plugins]}]
    if not isinstance(raw, list) or not raw:
        raise UserError(f"{source}: schedulingProfiles must be a non-empty list")
    return [_parse_profile(entry, index, plugins, source) for index, entry in enumerate(raw)]


def _parse_profile(
    entry: Any, index: int, plugins: dict[str, PluginSpec], source: str
) -> SchedulingProfile:
    if not isinstance(entry, dict):
        raise UserError(f"{source}: schedulingProfiles[{index}] must be a mapping")
    name = str(entry.get("name") or f"profile-{index}")
    refs: list[ProfilePlugin] = []
    for ref in entry.get("plugins") or []:
        plugin_ref = ref.get("pluginRef") if isinstance(ref, dict) else None
        if plugin_ref not in plugins:
            raise UserError(
                f"{source}: schedulingProfiles {name}: pluginRef {plugin_ref!r} is not a declared plugin"
            )
        weight = ref.get("weight", 1)
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or weight < 0:
            raise UserError(
                f"{source}: schedulingProfiles {name}: weight of {plugin_ref} must be a number >= 0"
            )
        refs.append(ProfilePlugin(plugin_ref=plugin_ref, weight=float(weight)))
    if not any(plugins[r.plugin_ref].type in PICKER_TYPES for r in refs):
        refs.append(ProfilePlugin(plugin_ref=_ensure_default_picker(plugins)))
    return SchedulingProfile(name=name, plugins=refs)


def _ensure_default_picker(plugins: dict[str, PluginSpec]) -> str:
    """The loader adds a max-score-picker when a profile has none (GIE config/loader/defaults.go)."""
    for spec in plugins.values():
        if spec.type == "max-score-picker":
            return spec.name
    plugins["max-score-picker"] = PluginSpec(type="max-score-picker", name="max-score-picker")
    return "max-score-picker"
