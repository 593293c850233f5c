"""Print one parity run side by side: per-request metrics, then per-request KV events."""

from __future__ import annotations

_COLS = (
    "prefix_cache_queries",
    "prefix_cache_hits",
    "num_preemptions",
    "cached_tokens",
    "kv_cache_usage_after",
)
_SHORT = {
    "prefix_cache_queries": "queries",
    "prefix_cache_hits": "hits",
    "num_preemptions": "preempt",
    "cached_tokens": "cached",
    "kv_cache_usage_after": "usage",
}


def _fmt(row: dict) -> str:
    return " ".join(f"{_SHORT[c]}={row.get(c)}" for c in _COLS)


def print_result(result: dict) -> None:
    seq = result["sequential"]
    print(f"\n=== hash algo {result['hash_algo']}: {'PASS' if result['passed'] else 'FAIL'} ===")
    print(f"streams: {result['streams']}")
    print("\n-- per request: real | emulator  (counter deltas, cached_tokens, kv usage after) --")
    for step in seq["steps"]:
        mark = "  " if step["metrics_equal"] else "!!"
        print(f"{mark} {step['step']} [{step['phase']}] {step['note']}")
        print(f"     real: {_fmt(step['real'])}")
        if not step["metrics_equal"]:
            print(f"     emu : {_fmt(step['emulator'])}")
    print("\n-- KV events per request: real | emulator ('!!' = differs) --")
    for step in seq["steps"]:
        rows = step["events_side_by_side"]
        if not rows:
            continue
        print(f"{step['step']}:")
        for real_text, emu_text, mark in rows:
            print(f"  {mark:2} {real_text:<58} | {emu_text}")
    ev = seq["events"]
    print(
        f"\nevents: real={ev['num_real']} emulator={ev['num_emulator']} semantic_equal={ev['semantic_equal']} "
        f"first_mismatch={ev['first_semantic_mismatch']} all_fields_equal={ev['all_fields_equal']}"
    )
    for diff in ev["other_field_differences"]:
        print(f"   field diff: {diff}")
    print(f"raw bit-exact (prompt-only blocks): {seq['raw_exact']}")
    print(f"totals after the sequential phase: {seq['totals']}")
    print(
        f"idle after: real={result['idle']['real']['after']}\n            emu ={result['idle']['emulator']['after']}"
    )
    conc = result["concurrent"]
    if conc.get("ran"):
        print(f"\n-- concurrent phase (informational) events_equal={conc['events_equal']} --")
        for group in conc["real"]:
            for name in ("real", "emulator"):
                g = conc[name][group]
                print(
                    f"  {group:20} {name:8}: {g['deltas']} outputs={g['num_output']} errors={g['errors']}"
                )
