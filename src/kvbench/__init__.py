"""kvbench: end-to-end evaluation of KV-cache offload and cache-aware routing for vLLM / llm-d."""

__version__ = "0.1.0"
