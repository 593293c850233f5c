"""The block-hash memo of this process's simulated stacks: every engine's block hasher and the
precise router's key chain share it (same prompts, same hashes; cells in one worker process share
it too). About 0.4 KiB an entry: at most ~200 MiB."""

from __future__ import annotations

from kvbench.emulator.engine.hashing import HashMemo

HASH_MEMO = HashMemo(max_entries=1 << 19)
