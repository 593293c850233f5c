"""The free queue's fresh run (blocks made when first popped) keeps the exact order and contents of
a queue built with every block up front, under random pops, frees to either end and touches."""

import random

import pytest

from kvbench.emulator.engine.block_pool import FreeBlockQueue, KVBlock


def eager_and_lazy(num_blocks: int) -> tuple[FreeBlockQueue, FreeBlockQueue, dict[int, KVBlock]]:
    eager = FreeBlockQueue([KVBlock(i) for i in range(num_blocks)])
    made: dict[int, KVBlock] = {}

    def new_block(block_id: int) -> KVBlock:
        assert block_id not in made, "a fresh block is made once"
        made[block_id] = KVBlock(block_id)
        return made[block_id]

    lazy = FreeBlockQueue(fresh_ids=range(num_blocks), new_block=new_block)
    return eager, lazy, made


def by_id(queue: FreeBlockQueue) -> dict[int, KVBlock]:
    blocks, block = {}, queue.head.next_free
    while block is not None and block is not queue.tail:
        blocks[block.block_id] = block
        block = block.next_free
    return blocks


@pytest.mark.parametrize("seed", range(30))
def test_fresh_run_matches_eager_queue(seed):
    rng = random.Random(seed)
    num_blocks = rng.randrange(1, 40)
    eager, lazy, _ = eager_and_lazy(num_blocks)
    eager_out: list[KVBlock] = []  # popped, not free
    lazy_out: list[KVBlock] = []
    for _ in range(200):
        op = rng.random()
        if op < 0.4 and eager.num_free_blocks:
            n = rng.randrange(1, eager.num_free_blocks + 1)
            got_eager, got_lazy = eager.popleft_n(n), lazy.popleft_n(n)
            assert [b.block_id for b in got_eager] == [b.block_id for b in got_lazy]
            eager_out += got_eager
            lazy_out += got_lazy
        elif op < 0.55 and eager.num_free_blocks:
            assert eager.popleft().block_id == lazy.popleft().block_id
            # popped one of each: keep them out of the free lists (never freed again here)
        elif op < 0.85 and eager_out:
            picks = sorted(rng.sample(range(len(eager_out)), rng.randrange(1, len(eager_out) + 1)))
            back_eager = [eager_out[i] for i in picks]
            back_lazy = [lazy_out[i] for i in picks]
            for i in reversed(picks):
                del eager_out[i], lazy_out[i]
            if rng.random() < 0.5:
                eager.append_n(back_eager)
                lazy.append_n(back_lazy)
            else:
                eager.prepend_n(back_eager)
                lazy.prepend_n(back_lazy)
        elif eager.num_free_blocks:
            # touch a real free block off the lazy queue (fresh blocks are never touched: no hash)
            real = [i for i in by_id(lazy) if i >= 0]
            if real:
                block_id = rng.choice(real)
                eager.remove(by_id(eager)[block_id])
                lazy.remove(by_id(lazy)[block_id])
        assert eager.block_ids() == lazy.block_ids()
        assert eager.num_free_blocks == lazy.num_free_blocks
    assert eager.popleft_n(eager.num_free_blocks) is not None
    lazy.popleft_n(lazy.num_free_blocks)
    assert lazy.block_ids() == [] and lazy.num_free_blocks == 0


def test_blocks_are_made_only_when_popped():
    _, lazy, made = eager_and_lazy(10_000)
    assert lazy.num_free_blocks == 10_000 and not made
    assert [b.block_id for b in lazy.popleft_n(3)] == [0, 1, 2]
    assert sorted(made) == [0, 1, 2]
    assert lazy.block_ids()[:2] == [3, 4]
    with pytest.raises(ValueError):
        lazy.popleft_n(10_000)
