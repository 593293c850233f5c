"""How long a step takes, from the work in it (a roofline with efficiency factors), and how many
GPU KV blocks fit (vLLM's memory rule).

Step time, per GPU of a tensor-parallel group of size tp:
  linear_flops   = 2 x linear_params x num_tokens + 2 x hidden x vocab x num_sampled   (lm_head)
  attn_flops     = 4 x layers x heads x head_dim x attended_pairs   (QK^T and PV, causal)
  compute_s      = linear_flops / (F x linear_eff) + attn_flops / (F x attn_eff)    (each / tp)
  memory_s       = streamed_weight_bytes / (B x weight_eff)
                   + kv_bytes_per_token x (kv_tokens_read + kv_tokens_written) / (B x kv_eff)   (/ tp)
  allreduce_s    = 2 x layers x (latency + 2 (tp-1)/tp x num_tokens x hidden x 2 B / tp_link)  (tp>1)
  layer_s        = layers x layer_latency   (per step, whatever its work: the gaps between a
                   layer's kernels and their tails inside the CUDA graph, which no byte or FLOP
                   count sees; what a lone decode step takes beyond streaming its weights and KV)
                   + eager_step_gpu   (a step of more tokens than cudagraph_max_tokens: the gaps
                   of its separately launched pieces, GPU time that no CPU work hides)
  gpu_s          = max(compute_s, memory_s) + allreduce_s + layer_s
  cpu_s          = step_overhead + per_req_overhead x reqs
                   + prefill_request_overhead x requests that start their prompt this step
                   + prefill_overhead_per_prompt_token x those requests' prompt tokens (the
                     engine core's work on a whole prompt: its token ids, block hashes, lookup)
                   (+ connector_step_overhead + connector_per_request_overhead x reqs
                     + connector_prefill_overhead x prefill starts, with a connector: its
                     scheduler-side lookups and store scans, the worker's transfer bookkeeping)
                   + eager_step_overhead   (a step of more tokens than cudagraph_max_tokens)
  step_s         = gpu_s + cpu_s                       (cpu_overlap off: the 0.11-era engine loop)
                 = max(gpu_s, cpu_s)                   (cpu_overlap on: async scheduling, the CPU
                                                        work of a step hides under the GPU's, so a
                                                        small model pays it and a large one mostly
                                                        does not: measured on the H200, offload
                                                        slows 0.6B and leaves 8B as it was)
                 + stored_bytes / store_stall_bytes_per_s   (offload stores that hold the step)
A step of more tokens than vLLM captures CUDA graphs for (max_cudagraph_capture_size: 512 with
max_num_seqs >= 256) launches every kernel one by one (torch.compile's graph without a CUDA graph):
cpu_s += eager_step_overhead. The launches run ahead of the GPU, so a large model's long prefill
kernels hide them and a small model's short ones wait for them. Measured on the H200 (vLLM 0.26):
Qwen3-0.6B's lone prompts up to 256 tokens took what a decode step takes, 1k-4k-token ones ~10 ms
more than their kernels, 8k-token ones what their kernels take; Qwen3-8B's showed no such step. It
is per step, not per request: a batch of short prefills that fits a graph does not pay it, so a
conversation turn of a hundred new tokens interrupts the decodes far less than a cold prompt.
Such a step also holds GPU time of its own (`eager_step_gpu_s`): on the H100 (vLLM 0.26) the lone
prompts of 1k-8k tokens took 7-9 ms longer than their kernels at every model size (0.6B, 8B, 14B),
where prompts of up to 256 tokens showed none; a large model pays it as well, in every mixed step
of a loaded engine (the probe's 64-stream loop of 8B ran 7.9 % fast without it, 5.5 % with 8 ms).
A connector's synchronous transfer time is added by the engine (StepTransfer.blocking_s).
Outside the steps, a new request becomes schedulable only after the API server has handed it to
the engine core (`request_delay_s`; FIFO, so never before an earlier request):
  delay = request_overhead_s + request_overhead_per_prompt_token_s x prompt_tokens
          + frontend_lag_s_per_output_tok_s x the engine's output rate (tokens/s, an exponential
            average over the last ~50 ms of steps that decays while the engine idles)
          + frontend_lag_s_per_stream x the requests in flight in the engine when it arrives
          (+ connector_request_overhead_s with a connector: the connector's lookup on admission)
The two lag terms are the API server's event-loop lag: one Python process streams every output
token (detokenize, SSE chunk, socket write), so each hop of a new request through it (HTTP body,
prompt validation, IPC to the engine core, the first token's way back) waits longer the more it
serves. Per output token/s is the H200 profile's form; on the H100 probes the 64-stream points of
0.6B and 8B waited the same ~75 ms at output rates 2.8x apart, so the H100 profile charges it per
stream in flight instead. The fixed and per-prompt-token terms are what a lone request spends outside
the engine's steps (HTTP, prompt parsing and hashing, IPC, the first token's way back): on the H200
the lone probes gave about 10 ms plus 1.6 us per prompt token, the cells' refit 10 ms plus 0.8 us
(the shipped profile). It is a latency, not engine work: it delays the request, not the steps.
F, B: the hardware profile's achievable bf16 FLOP/s and HBM bytes/s.

Calibration (benchmarks/emulator/cost_model_gpu_measure.py on the project's H100, torch 2.11, Qwen3-8B
shapes, CUDA graphs; results in benchmarks/results/cost_model_gpu_measure_h100.json): weight
streaming reached 0.86 and KV streaming 0.97 of the 3.0 TB/s device-copy rate; 2k and 8k prefills
matched the linear (0.85) and attention (0.5) efficiencies within 4%.
On the H200 with real vLLM 0.26 a lone decode step took 1.60 / 5.18 / 8.65 ms for Qwen3-0.6B / 8B /
14B (28 / 36 / 40 layers). 8B to 14B adds 12.8 GB of weights for 3.47 ms, so weights stream at
~3.7 TB/s (0.86 of the profile's 4.3), and each step holds ~1.1 ms beyond its bytes at both sizes:
launch gaps and kernel tails inside the CUDA graph, which no byte or FLOP count sees. The model
charges it per layer (layer_latency_s; the graph's kernel count grows with the layers); two sizes
cannot tell that from a constant, and the fit on the GPU-bound 8B and 14B probes put it at 33 us a
layer with weight streaming at 0.87. 0.6B's steps are CPU-bound and set the CPU terms instead.

KV capacity (vLLM `determine_available_memory` / `get_num_blocks`):
  available = gpu_memory_utilization x HBM - weights/tp - peak activations - non-torch memory
  num_gpu_blocks = available // (block_size x kv_bytes_per_token / tp)
The activation and non-torch terms are estimates (vLLM measures them with a profiling run): the MLP
intermediate and a few hidden-state copies for max_num_batched_tokens tokens, fp32 logits for
max_num_seqs sequences, plus a fixed non-torch allowance (CUDA context, NCCL, cuBLAS, graphs).
"""

from __future__ import annotations

from dataclasses import dataclass

from kvbench.emulator.engine.scheduler import StepWork
from kvbench.spec.catalogs import HardwareProfile, ModelProfile


@dataclass(frozen=True, slots=True)
class CostParams:
    """Calibration knobs (dimensionless factors are fractions of the hardware profile's rates)."""

    linear_efficiency: float = 0.85  # large GEMMs vs the best measured matmul
    attention_efficiency: float = 0.5  # FlashAttention-class kernels vs matmul peak
    weight_memory_efficiency: float = 0.86  # GEMM/GEMV weight streaming vs a device memory copy
    kv_memory_efficiency: float = 0.97  # attention KV streaming vs a device memory copy
    step_overhead_s: float = 0.0015  # scheduler, input prep, launch, sampler: fixed per step
    per_request_overhead_s: float = 2e-6  # per scheduled request (metadata, sampling)
    allreduce_latency_s: float = 6e-6  # per all-reduce call (vLLM custom all-reduce class)
    layer_latency_s: float = 0.0  # GPU time per layer per step that no work count explains
    # Measured against real vLLM (kvbench calibrate); the defaults leave the model as it was.
    cpu_overlap: bool = False  # async scheduling: a step takes max(GPU, CPU), not their sum
    request_overhead_s: float = 0.0  # arrival -> schedulable (API server, IPC, scheduling)
    request_overhead_per_prompt_token_s: float = 0.0  # prompt parsing, validation, HTTP
    frontend_lag_s_per_output_tok_s: float = 0.0  # API-server lag per output token/s it streams
    frontend_lag_s_per_stream: float = 0.0  # ... and per request in flight when one arrives
    connector_request_overhead_s: float = 0.0  # with a connector: per new request (lookup latency)
    prefill_request_overhead_s: float = 0.0  # per request starting its prompt in a step
    # ... and per token of that prompt, cached ones included: the engine core's work on the whole
    # prompt (decoding the request's token ids, its block hashes, the prefix-cache lookup)
    prefill_overhead_per_prompt_token_s: float = 0.0
    connector_step_overhead_s: float = 0.0  # a KV connector's per-step CPU work
    connector_per_request_overhead_s: float = 0.0  # ... and per scheduled request (store scans)
    connector_prefill_overhead_s: float = 0.0  # per prefill start with a connector (lookups)
    store_stall_bytes_per_s: float = 0.0  # offload stores hold the step at this rate; 0: never
    eager_step_overhead_s: float = 0.0  # CPU launch work of a step too large for a CUDA graph
    # ... and the GPU time such a step holds beyond its work: vLLM captures piecewise graphs, so
    # attention and the ops between graph pieces run as separate launches with gaps between them
    eager_step_gpu_s: float = 0.0
    cudagraph_max_tokens: float = 512  # vLLM's max_cudagraph_capture_size (its default)
    # LMCache's own GPU<->CPU copies (its gather/scatter of paged KV into chunks; without its
    # compiled c_ops it runs them in torch, far below the host link): bytes/s, 0 = the host link;
    # its Python work per 256-token chunk stored or retrieved (keys, allocation, metadata); and
    # per request scheduled in a step (the worker's save/load checks run in the forward path).
    lmcache_copy_bytes_per_s: float = 0.0
    lmcache_chunk_overhead_s: float = 0.0
    lmcache_per_request_overhead_s: float = 0.0
    # its remote tier's put/get path beyond the network (serialising chunks, the store server
    # copying them): bytes/s, 0 = free; added to the network time of the LMCache config.
    lmcache_remote_bytes_per_s: float = 0.0
    # CUDA context, NCCL/cuBLAS workspaces, CUDA graphs. Calibrated on the one published count we
    # have: vLLM reported 9,271 GPU blocks for Qwen3-32B, TP 2 on H100 80GB, gpu_memory_utilization
    # 0.65 (llm-d guides/tiered-prefix-cache/cpu README, benchmark appendix).
    non_torch_bytes: int = int(1.835 * 2**30)


@dataclass(frozen=True, slots=True)
class StepCost:
    """A step's time, split so benchmarks and tests can see the parts."""

    compute_s: float
    memory_s: float
    allreduce_s: float
    overhead_s: float  # the step's CPU work (scheduler, input prep, launch, sampler, connector)
    cpu_overlap: bool = False
    layer_s: float = 0.0  # layers x layer_latency_s (+ eager_step_gpu_s): GPU time no work explains

    @property
    def gpu_s(self) -> float:
        return max(self.compute_s, self.memory_s) + self.allreduce_s + self.layer_s

    @property
    def duration_s(self) -> float:
        if self.cpu_overlap:
            return max(self.gpu_s, self.overhead_s)
        return self.gpu_s + self.overhead_s


class CostModel:
    def __init__(
        self,
        model: ModelProfile,
        hardware: HardwareProfile,
        tensor_parallel_size: int = 1,
        params: CostParams = CostParams(),
        with_connector: bool = False,
    ) -> None:
        self.model = model
        self.with_connector = with_connector
        self.hardware = hardware
        self.tp = tensor_parallel_size
        self.params = params
        tp = tensor_parallel_size
        # Per-GPU constants, precomputed: step_cost runs once per engine step.
        self._linear_flops_per_token = 2.0 * model.linear_params / tp
        self._lm_head_flops_per_sample = 2.0 * model.hidden_size * model.vocab_size / tp
        self._attn_flops_per_pair = (
            4.0 * model.num_layers * model.num_attention_heads * model.head_dim / tp
        )
        self._weight_bytes = model.streamed_weight_bytes / tp
        self._kv_bytes_per_token = model.kv_bytes_per_token / tp
        self._linear_rate = hardware.bf16_flops_per_s * params.linear_efficiency
        self._attn_rate = hardware.bf16_flops_per_s * params.attention_efficiency
        self._weight_rate = hardware.hbm_bytes_per_s * params.weight_memory_efficiency
        self._kv_rate = hardware.hbm_bytes_per_s * params.kv_memory_efficiency
        self._num_allreduces = 2 * model.num_layers if tp > 1 else 0
        self._layer_s = model.num_layers * params.layer_latency_s
        self._allreduce_bytes_per_token = (
            2.0 * (tp - 1) / tp * model.hidden_size * 2 if tp > 1 else 0.0
        )

    def step_cost(self, work: StepWork) -> StepCost:
        linear_flops = (
            self._linear_flops_per_token * work.num_tokens
            + self._lm_head_flops_per_sample * work.num_sampled
        )
        attn_flops = self._attn_flops_per_pair * work.attended_pairs
        compute_s = linear_flops / self._linear_rate + attn_flops / self._attn_rate
        kv_tokens = work.kv_tokens_read + work.num_kv_tokens_written
        memory_s = (
            self._weight_bytes / self._weight_rate
            + self._kv_bytes_per_token * kv_tokens / self._kv_rate
        )
        allreduce_s = 0.0
        if self._num_allreduces:
            per_call_s = (
                self.params.allreduce_latency_s
                + self._allreduce_bytes_per_token
                * work.num_tokens
                / self.hardware.tp_link_bytes_per_s
            )
            allreduce_s = self._num_allreduces * per_call_s
        params = self.params
        overhead_s = params.step_overhead_s + params.per_request_overhead_s * work.num_reqs
        prefill_start_s = params.prefill_request_overhead_s
        if self.with_connector:
            overhead_s += (
                params.connector_step_overhead_s
                + params.connector_per_request_overhead_s * work.num_reqs
            )
            prefill_start_s += params.connector_prefill_overhead_s
        overhead_s += prefill_start_s * work.num_prefill_starts
        overhead_s += params.prefill_overhead_per_prompt_token_s * work.num_prefill_start_tokens
        layer_s = self._layer_s
        if work.num_tokens > params.cudagraph_max_tokens:
            overhead_s += params.eager_step_overhead_s
            layer_s += params.eager_step_gpu_s
        return StepCost(compute_s, memory_s, allreduce_s, overhead_s, params.cpu_overlap, layer_s)

    def request_delay_s(
        self, prompt_tokens: int, output_rate_tok_s: float, streams_in_flight: int = 0
    ) -> float:
        """Arrival -> schedulable for a new request (see the module doc); 0 unless calibrated.
        `streams_in_flight`: the engine's unfinished requests when this one arrives."""
        params = self.params
        delay_s = (
            params.request_overhead_s
            + params.request_overhead_per_prompt_token_s * prompt_tokens
            + params.frontend_lag_s_per_output_tok_s * output_rate_tok_s
            + params.frontend_lag_s_per_stream * streams_in_flight
        )
        if self.with_connector:
            delay_s += params.connector_request_overhead_s
        return delay_s

    def store_stall_s(self, stored_bytes: int) -> float:
        """How long a step's offload stores hold it (0 unless calibrated)."""
        rate = self.params.store_stall_bytes_per_s
        return stored_bytes / rate if rate > 0 and stored_bytes else 0.0

    def idle_step_s(self) -> float:
        """A step that schedules nothing: the engine loop's own turn."""
        extra = self.params.connector_step_overhead_s if self.with_connector else 0.0
        return self.params.step_overhead_s + extra

    def step_duration_s(self, work: StepWork) -> float:
        return self.step_cost(work).duration_s

    def roofline_bound_s(self, work: StepWork) -> float:
        """Pure roofline (no efficiency factors, overheads or all-reduce): a lower bound."""
        flops = (
            self._linear_flops_per_token * work.num_tokens
            + self._lm_head_flops_per_sample * work.num_sampled
            + self._attn_flops_per_pair * work.attended_pairs
        )
        kv_tokens = work.kv_tokens_read + work.num_kv_tokens_written
        bytes_ = self._weight_bytes + self._kv_bytes_per_token * kv_tokens
        return max(flops / self.hardware.bf16_flops_per_s, bytes_ / self.hardware.hbm_bytes_per_s)


def activation_reserve_bytes(
    model: ModelProfile,
    tp: int,
    max_num_batched_tokens: int,
    max_num_seqs: int,
    params: CostParams = CostParams(),
) -> int:
    mlp_bytes = (
        max_num_batched_tokens * 2 * model.intermediate_size // tp * 2
    )  # gate+up outputs, bf16
    hidden_bytes = max_num_batched_tokens * model.hidden_size * 4 * 2  # residual, norm, attn in/out
    logits_bytes = max_num_seqs * model.vocab_size * 4  # fp32 logits of the sampler warm-up
    return mlp_bytes + hidden_bytes + logits_bytes + params.non_torch_bytes


def num_gpu_blocks_by_memory(
    model: ModelProfile,
    hardware: HardwareProfile,
    tp: int,
    block_size: int,
    gpu_memory_utilization: float,
    max_num_batched_tokens: int,
    max_num_seqs: int,
    params: CostParams = CostParams(),
) -> int:
    """vLLM's rule; may be <= 0 when the weights do not fit (the caller reports that)."""
    budget_bytes = gpu_memory_utilization * hardware.hbm_bytes
    reserve_bytes = activation_reserve_bytes(
        model, tp, max_num_batched_tokens, max_num_seqs, params
    )
    available_bytes = budget_bytes - model.weight_bytes / tp - reserve_bytes
    block_bytes_per_gpu = block_size * model.kv_bytes_per_token / tp
    return int(available_bytes // block_bytes_per_gpu)
