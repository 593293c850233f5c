"""kvbench's load generator: asyncio + aiohttp client for OpenAI-compatible servers.

Public API in `kvbench.loadgen.api` (run_level, sweep_rates, EndpointConfig, LevelPlan, RunClock).
Layout: transport (HTTP, one pooled session), sse (stream framing), capabilities (one probe),
history (conversation state), strategies + window (when turns go out, which phase), executor
(one turn -> one RequestRecord), recorder (timings, usage, headers, reuse distance), monitor
(client health), progress (Rich bar, summary table), mock_server (tests and benchmarks).
"""
