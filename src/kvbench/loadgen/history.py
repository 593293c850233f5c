"""Conversation state across turns, and the order conversations are handed out in.

Contract (workload/types.py): turn k's prompt = prefix + (q_0 + a_0) + ... + (q_{k-1} + a_{k-1}) + q_k.
For token-id prompts the answers a_i are the ids the server returned (`return_token_ids`); when it
returns none, the client synthesizes `output_tokens` ids deterministically (seeded by conversation id
and turn) from the ids the conversation already uses, and the record says `history_synthesized`.
For chat, history is the real answer text as messages (system = prefix_text, user/assistant turns).
A conversation whose turn failed ends there: later turns would need an answer that never came.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field

from kvbench.errors import UserError
from kvbench.workload.types import Conversation, Turn


@dataclass(slots=True)
class ConversationState:
    conversation: Conversation
    conversation_id: str  # the workload id, or a fresh one when the level cycles the list
    seed: int
    history_ids: list[int] = field(default_factory=list)  # prefix + earlier questions and answers
    messages: list[dict] = field(default_factory=list)  # chat history
    next_turn_index: int = 0
    finished: bool = False
    synthesized_any: bool = False

    def __post_init__(self) -> None:
        self.history_ids = list(self.conversation.prefix_token_ids)
        if self.conversation.prefix_text:
            self.messages = [{"role": "system", "content": self.conversation.prefix_text}]

    @property
    def has_next_turn(self) -> bool:
        return not self.finished and self.next_turn_index < len(self.conversation.turns)

    @property
    def turn(self) -> Turn:
        return self.conversation.turns[self.next_turn_index]

    @property
    def history_tokens(self) -> int:
        """Tokens of this conversation already in the server's sequence before the next question."""
        return len(self.history_ids)

    def prompt_ids(self) -> list[int]:
        return self.history_ids + list(self.turn.question_token_ids)

    def chat_messages(self) -> list[dict]:
        text = self.turn.question_text
        if text is None:
            raise UserError(
                f"api=chat needs question_text; conversation {self.conversation.conversation_id!r} "
                f"turn {self.next_turn_index} has none (use api=completions for token-id workloads)"
            )
        return [*self.messages, {"role": "user", "content": text}]

    def finish_turn(
        self, ok: bool, answer_ids: Sequence[int] | None, answer_text: str, output_tokens: int
    ) -> bool:
        """Append the turn's question and answer to the history; return whether ids were synthesized.

        `answer_ids` None means the server returned no ids: `output_tokens` ids are synthesized.
        """
        turn = self.turn
        synthesized = False
        if not ok:
            self.finished = True
            return False
        if answer_ids is None:
            answer_ids = synthesize_answer(
                self._id_pool(),
                output_tokens,
                f"{self.seed}:{self.conversation_id}:{self.next_turn_index}",
            )
            synthesized = True
            self.synthesized_any = True
        self.history_ids.extend(turn.question_token_ids)
        self.history_ids.extend(answer_ids)
        if turn.question_text is not None:
            self.messages.append({"role": "user", "content": turn.question_text})
            self.messages.append({"role": "assistant", "content": answer_text})
        self.next_turn_index += 1
        return synthesized

    def _id_pool(self) -> Sequence[int]:
        pool = self.conversation.turns[0].question_token_ids or self.conversation.prefix_token_ids
        return pool or (0,)


def synthesize_answer(pool: Sequence[int], count: int, seed_key: str) -> list[int]:
    """`count` ids drawn from ids the model already accepted (so they are inside its vocabulary)."""
    rng = random.Random(seed_key)
    return [pool[rng.randrange(len(pool))] for _ in range(count)]


class ConversationSource:
    """Hands out conversations in list order (the workload's reuse order).

    When `cycle` is true and the list runs out, it starts over with fresh conversation ids
    (`<id>~c<pass>`): the token ids repeat, so a later pass can hit cache left by an earlier one.
    """

    def __init__(self, conversations: list[Conversation], *, cycle: bool, seed: int) -> None:
        self._conversations = conversations
        self._cycle = cycle
        self._seed = seed
        self._position = 0
        self.passes_started = 1 if conversations else 0

    def next(self) -> ConversationState | None:
        if not self._conversations:
            return None
        pass_index, index = divmod(self._position, len(self._conversations))
        if pass_index > 0 and not self._cycle:
            return None
        self._position += 1
        self.passes_started = max(self.passes_started, pass_index + 1)
        conversation = self._conversations[index]
        conversation_id = conversation.conversation_id
        if pass_index > 0:
            conversation_id = f"{conversation_id}~c{pass_index}"
        return ConversationState(
            conversation=conversation, conversation_id=conversation_id, seed=self._seed
        )
