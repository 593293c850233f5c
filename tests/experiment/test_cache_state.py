"""Which cache state a cell starts in, from what the target's reset did."""

from kvbench.experiment.cache_state import expected_state
from kvbench.results.deployment import ResetResult


def reset(components: dict) -> ResetResult:
    return ResetResult.model_validate({"components": components})


ENGINES_RESET = {"engine-0": {"reset": True}, "engine-1": {"reset": True}}


def test_engines_reset_is_cold_even_when_the_routers_index_has_no_reset_api():
    router_not_reset = {
        "router": {"reset": False, "what": "the EPP's approximate prefix index has no reset API"}
    }
    assert expected_state(reset({**ENGINES_RESET, **router_not_reset}), primed=False) == "cold"


def test_an_engine_or_store_that_was_not_reset_makes_the_state_unknown():
    assert (
        expected_state(reset({**ENGINES_RESET, "engine-1": {"reset": False}}), primed=False)
        == "unknown"
    )
    assert (
        expected_state(reset({**ENGINES_RESET, "kv-store": {"reset": False}}), primed=False)
        == "unknown"
    )
    assert (
        expected_state(reset({"router": {"reset": True}}), primed=False) == "unknown"
    )  # nothing holding KV was reset
    assert expected_state(None, primed=False) == "unknown"


def test_a_primed_cell_is_warm():
    assert expected_state(reset(ENGINES_RESET), primed=True) == "warm"
