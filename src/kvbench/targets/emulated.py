"""The emulated target (the embedded default): per scenario, a local stack of emulated vLLM
engines (`kvbench emulate serve`), the emulated llm-d router in front, and the real Redis / Valkey
server the scenario needs, all on 127.0.0.1 (see targets/local_stack.py and emulator/stack.py)."""

from __future__ import annotations

from kvbench.emulator.stack import REMOTE_PAYLOAD_SCALE, EmulatedLauncher
from kvbench.results.layout import SystemUnderTest
from kvbench.targets.local_stack import LocalStackTarget

COST_MODEL = "roofline (linear + attention FLOPs, weight + KV bytes; TP split + all-reduce; host-link transfers)"


class EmulatedTarget(LocalStackTarget):
    startup_timeout_s = 60.0

    def launcher(self) -> EmulatedLauncher:
        return EmulatedLauncher(hardware=self.spec.hardware)

    def describe(self) -> SystemUnderTest:
        spec = self.spec
        return SystemUnderTest(
            kind="emulated",
            emulated=True,
            description=(
                f"emulated vLLM v1 engines (kvbench emulator, roofline cost model), {spec.hardware} "
                f"profile, {spec.engines} engine(s) x TP={spec.tensor_parallel_size}, behind the emulated "
                "llm-d endpoint picker; numbers are the cost model's, not measurements of real hardware"
            ),
            details={
                "hardware": spec.hardware,
                "cost_model": COST_MODEL,
                "engines": spec.engines,
                "tensor_parallel_size": spec.tensor_parallel_size,
                "gpu_memory_utilization": spec.gpu_memory_utilization,
                "num_gpu_blocks_override": spec.num_gpu_blocks_override,
                "max_num_seqs": spec.max_num_seqs,
                "block_size": spec.block_size,
                "router": "kvbench emulate router (llm-d EPP semantics)",
                "kv_stores": "real redis-server / valkey-server on 127.0.0.1",
                # Keys, existence, eviction and round trips in the LMCache remote store are real;
                # the bytes written are scaled down, while transfer time is costed from the true bytes.
                "lmcache_remote_payload_scale": REMOTE_PAYLOAD_SCALE,
            },
        )
