"""The emulated vLLM v1 engine core.

Data flow of one `EmulatedEngine.step(now_s)` (engine.py):
  connector.poll -> Scheduler.schedule (scheduler.py) -> KVCacheManager (kv_manager.py) over the
  BlockPool (block_pool.py, prefix cache + LRU free queue) -> connector.build_step ->
  CostModel (cost_model.py) -> postprocess (deterministic tokens, request.py) -> StepResult.
Block hashes: hashing.py (vLLM's sha256 / sha256_cbor chains). Assembly and flag validation:
build.py (`build_engine(EngineArgs)`). Behaviour profiles (`--vllm-compat 0.11|0.32`): compat.py.
Running without a clock: virtual.py (`VirtualDriver`).
Contracts shared with other packages: interface.py (Engine, EngineArgs, events) and connector.py.
"""
