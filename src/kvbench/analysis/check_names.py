"""The names of the validity checks, defined once: checks are created with these and guidance,
the report and the twin logic select checks by them (a renamed check cannot silently drop out)."""

from __future__ import annotations

CELLS_COMPLETED = "cells completed"
CLIENT_KEEPS_UP = "client keeps up"
EMULATOR_KEEPS_UP = "emulator keeps up"
ENOUGH_REQUESTS = "enough requests"
ERROR_RATE = "error rate"
COLD_START = "cold start"
REUSE_OPPORTUNITY = "reuse opportunity"
ROUTING_CAN_MATTER = "routing can matter"
MEMORY_PRESSURE = "memory pressure"
OFFLOAD_TIER_EXERCISED = "offload tier exercised"
CACHED_TOKENS_REPORTED = "cached tokens reported"
AA_TWINS_AGREE = "A/A twins agree"
# Degradation during a cell, from the servers' own counters (degradation_checks.py).
CACHE_RESET = "cache reset before the cell"
KV_STORE_AVAILABLE = "KV store available"
ROUTER_INDEX_AVAILABLE = "router index available"
KV_EVENTS_COMPLETE = "KV events complete"
ENGINES_STAYED_IN_ROUTING = "engines stayed in routing"
RUN_FILES_INTACT = "run files intact"

# Checks whose FLAG bounds what a finding can claim: guidance repeats them as caveats.
BOUND_CHECKS = (
    CLIENT_KEEPS_UP,
    EMULATOR_KEEPS_UP,
    MEMORY_PRESSURE,
    OFFLOAD_TIER_EXERCISED,
    ROUTING_CAN_MATTER,
    REUSE_OPPORTUNITY,
    CACHE_RESET,
    KV_STORE_AVAILABLE,
    ROUTER_INDEX_AVAILABLE,
    KV_EVENTS_COMPLETE,
    ENGINES_STAYED_IN_ROUTING,
)
