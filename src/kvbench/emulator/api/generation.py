"""One generation request (completions or chat) as engine requests, rendered as vLLM renders it.

A request with P prompts and `n` choices becomes P x n engine requests; choice `p * n + j` is the
j-th sample of prompt p (vLLM's index). Usage counts each prompt's tokens (and cached tokens,
tier hits) once, and every choice's generated tokens. Streams interleave the choices' chunks in
the order their tokens are delivered; each choice ends with its `finish_reason` chunk.

Contract with the caller: `submit()` once, then `write_stream()` or `complete()`, and `abort()` in
a `finally` (it aborts only engine requests that are still running: the client went away).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from kvbench.emulator.api import protocol as proto
from kvbench.emulator.api.driver import EngineDriver, RequestStream
from kvbench.emulator.api.logprobs import CompletionLogprobs, alternatives, chat_logprobs
from kvbench.emulator.api.responses import (
    ChoiceResult,
    ResponseShape,
    UsageCounts,
    chat_body,
    completion_body,
    continuous_usage,
    usage_body,
)
from kvbench.emulator.api.sse import DONE, StreamEncoder
from kvbench.emulator.api.tokenizer import IncrementalDecoder, Tokenizer
from kvbench.emulator.engine.interface import EngineRequest, FinishReason, TierHits


@dataclass(slots=True)
class GenerationContext:
    """What every request of one server shares."""

    driver: EngineDriver
    tokenizer: Tokenizer
    shape: ResponseShape
    model_name: str
    details_on: bool  # --enable-prompt-tokens-details
    vocab_size: int  # alternatives of synthetic logprobs are drawn from it
    on_finished: Callable[[int, int], None]  # (n, max generated tokens of a prompt's choices)


@dataclass
class Choice:
    index: int
    prompt: proto.PromptInput
    stream: RequestStream
    counts_prompt: bool  # the first choice of its prompt: its prompt tokens count in usage
    decoder: IncrementalDecoder
    completion_logprobs: CompletionLogprobs | None
    text_parts: list[str] = field(default_factory=list)
    num_sent_tokens: int = 0
    sent_first: bool = False
    sent_finish: bool = False


class Generation:
    def __init__(
        self, ctx: GenerationContext, params: proto.GenerationParams, response_id: str, created: int
    ) -> None:
        self.ctx = ctx
        self.params = params
        self.response_id = response_id
        self.created = created
        self.head = {
            "id": response_id,
            "object": "chat.completion" if params.chat else "text_completion",
            "created": created,
            "model": ctx.model_name,
        }
        self.choices: list[Choice] = []

    # ---- engine side ----

    def submit(self) -> None:
        p, ctx = self.params, self.ctx
        for prompt_index, prompt in enumerate(p.prompts):
            for sample in range(p.n):
                index = prompt_index * p.n + sample
                request = EngineRequest(
                    request_id=f"{self.response_id}-{index}",
                    prompt_token_ids=prompt.token_ids,
                    max_tokens=prompt.max_tokens,
                    arrival_s=ctx.driver.clock(),
                    ignore_eos=p.ignore_eos,
                    sampling_seed=p.seed,
                    cache_salt=p.cache_salt,
                    kv_transfer_params=p.kv_transfer_params,
                )
                logprobs = None
                if p.num_logprobs is not None and not p.chat:
                    logprobs = CompletionLogprobs(
                        ctx.tokenizer.decode, p.num_logprobs, ctx.vocab_size
                    )
                    if p.echo:
                        logprobs.add_prompt(prompt.token_ids)
                choice = Choice(
                    index,
                    prompt,
                    ctx.driver.submit(request),
                    sample == 0,
                    IncrementalDecoder(ctx.tokenizer),
                    logprobs,
                )
                self.choices.append(choice)

    def abort(self) -> None:
        for choice in self.choices:
            if not choice.stream.finished:
                self.ctx.driver.abort(choice.stream.request_id)

    def _observe_groups(self) -> None:
        n = self.params.n
        for start in range(0, len(self.choices), n):
            group = self.choices[start : start + n]
            longest = max(len(c.stream.output_token_ids) for c in group)
            self.ctx.on_finished(n, longest)

    # ---- shared pieces ----

    def usage_counts(self) -> UsageCounts:
        hits = TierHits()
        prompt_tokens = cached = completion = 0
        for choice in self.choices:
            completion += len(choice.stream.output_token_ids)
            if choice.counts_prompt:
                stream = choice.stream
                prompt_tokens += stream.num_prompt_tokens
                cached += stream.num_cached_tokens
                hits.gpu_tokens += stream.hits.gpu_tokens
                hits.cpu_tokens += stream.hits.cpu_tokens
                hits.remote_tokens += stream.hits.remote_tokens
        return UsageCounts(prompt_tokens, completion, cached, hits)

    def first_hits(self) -> TierHits:
        return self.usage_counts().hits

    def _echo_text(self, choice: Choice) -> str:
        prompt = choice.prompt
        return (
            prompt.text if prompt.text is not None else self.ctx.tokenizer.decode(prompt.token_ids)
        )

    def _chat_logprobs(self, choice: Choice, token_ids: list[int]) -> dict[str, Any] | None:
        if self.params.num_logprobs is None or not self.params.chat:
            return None
        ctx = self.ctx
        return chat_logprobs(
            ctx.tokenizer.decode,
            token_ids,
            choice.num_sent_tokens,
            self.params.num_logprobs,
            ctx.vocab_size,
        )

    @staticmethod
    def _finish_text(stream: RequestStream) -> str | None:
        return stream.finish_reason.value if stream.finish_reason else None

    # ---- non-streamed ----

    async def complete(self) -> dict[str, Any]:
        for choice in self.choices:
            while (batch := await choice.stream.next_tokens()) is not None:
                final = choice.stream.finished and not choice.stream.has_pending
                choice.text_parts.append(choice.decoder.push(batch, final))
        self._observe_groups()
        p = self.params
        results = []
        for choice in self.choices:
            output_ids = choice.stream.output_token_ids
            text = "".join(choice.text_parts)
            logprobs: dict[str, Any] | None = None
            prompt_logprobs = None
            if choice.completion_logprobs is not None:
                choice.completion_logprobs.add_output(output_ids)
                logprobs = choice.completion_logprobs.slice()
                if p.echo:
                    prompt_logprobs = self._prompt_logprobs(choice)
            elif p.chat:
                logprobs = self._chat_logprobs(choice, output_ids)
            if p.echo:
                text = self._echo_text(choice) + text
            results.append(
                ChoiceResult(
                    index=choice.index,
                    text=text,
                    finish_reason=self._finish_text(choice.stream),
                    logprobs=logprobs,
                    token_ids=list(output_ids) if p.return_token_ids else None,
                    prompt_token_ids=choice.prompt.token_ids
                    if p.return_token_ids and not p.chat
                    else None,
                    prompt_logprobs=prompt_logprobs,
                )
            )
        usage = usage_body(self.ctx.shape, self.usage_counts(), self.ctx.details_on, p.chat, False)
        if p.chat:
            prompt_ids = self.choices[0].prompt.token_ids if p.return_token_ids else None
            return chat_body(self.ctx.shape, self.head, results, usage, prompt_ids)
        return completion_body(self.ctx.shape, self.head, results, usage)

    def _prompt_logprobs(self, choice: Choice) -> list[Any]:
        """vLLM's prompt_logprobs (echo + logprobs): per prompt token {id: {logprob, rank,
        decoded_token}}, null for the first."""
        decode, num_top = self.ctx.tokenizer.decode, self.params.num_logprobs or 0
        out: list[Any] = [None]
        for position, token_id in enumerate(choice.prompt.token_ids[1:], start=1):
            top = alternatives(token_id, position, max(1, num_top), self.ctx.vocab_size)
            out.append(
                {
                    str(alt): {"logprob": logprob, "rank": rank, "decoded_token": decode([alt])}
                    for rank, (alt, logprob) in enumerate(top, start=1)
                }
            )
        return out

    # ---- streamed ----

    async def _deliveries(self) -> AsyncIterator[tuple[Choice, list[int] | None]]:
        """(choice, token batch) as delivered; (choice, None) once a choice is exhausted."""
        if len(self.choices) == 1:
            only = self.choices[0]
            while (batch := await only.stream.next_tokens()) is not None:
                yield only, batch
            yield only, None
            return
        queue: asyncio.Queue[tuple[Choice, list[int] | None]] = asyncio.Queue()

        async def pump(choice: Choice) -> None:
            while (batch := await choice.stream.next_tokens()) is not None:
                queue.put_nowait((choice, batch))
            queue.put_nowait((choice, None))

        tasks = [asyncio.create_task(pump(c)) for c in self.choices]
        try:
            remaining = len(tasks)
            while remaining:
                item = await queue.get()
                remaining -= item[1] is None
                yield item
        finally:
            for task in tasks:
                task.cancel()

    def _chunk_usage(self, choice: Choice) -> dict[str, Any] | None:
        if not self.params.continuous_usage_stats:
            return None
        return continuous_usage(
            self.ctx.shape,
            choice.stream.num_prompt_tokens,
            choice.num_sent_tokens,
            self.params.chat,
        )

    def _token_chunk(
        self, encoder: StreamEncoder, choice: Choice, batch: list[int], finish: str | None
    ) -> bytes:
        p = self.params
        text = choice.decoder.push(batch, final=finish is not None)
        logprobs = None
        if choice.completion_logprobs is not None:
            start = len(choice.completion_logprobs.tokens)
            choice.completion_logprobs.add_output(batch)
            logprobs = choice.completion_logprobs.slice(0 if not choice.sent_first else start)
        elif p.chat:
            logprobs = self._chat_logprobs(choice, batch)
        prompt_ids = None
        if not choice.sent_first:
            if p.echo:
                text = self._echo_text(choice) + text
            if not p.chat and (p.return_token_ids or (p.echo and self.ctx.shape.v032_fields)):
                prompt_ids = choice.prompt.token_ids
        choice.num_sent_tokens += len(batch)
        choice.sent_first = True
        choice.sent_finish = finish is not None
        usage = self._chunk_usage(choice)
        return encoder.token_chunk(choice.index, text, batch, finish, logprobs, usage, prompt_ids)

    async def write_stream(self, response: web.StreamResponse, encoder: StreamEncoder) -> None:
        p = self.params
        if p.chat:
            for choice in self.choices:
                usage = self._chunk_usage(choice)
                await response.write(
                    encoder.role_chunk(choice.index, usage, choice.prompt.token_ids)
                )
        async for choice, batch in self._deliveries():
            stream = choice.stream
            if batch is not None:
                last = stream.finished and not stream.has_pending
                finish = self._finish_text(stream) if last else None
                await response.write(self._token_chunk(encoder, choice, batch, finish))
            elif not choice.sent_finish and stream.finish_reason not in (None, FinishReason.ABORT):
                finish = self._finish_text(stream)
                await response.write(self._token_chunk(encoder, choice, [], finish))
        self._observe_groups()
        if p.include_usage:
            counts = self.usage_counts()
            usage = usage_body(self.ctx.shape, counts, self.ctx.details_on, p.chat, True)
            await response.write(encoder.usage_chunk(usage))
        await response.write(DONE)
        await response.write_eof()
