import json

import pytest

from kvbench.errors import UserError
from kvbench.spec.experiment import (
    Distribution,
    MultiTurnSharedPrefix,
    Replay,
    SharedPrefixGroups,
    Synthetic,
    WorkingSetTarget,
)
from kvbench.workload.build import build_workload, longest_conversation_tokens
from kvbench.workload.sizing import KvCapacities
from kvbench.workload.tokens import TOKEN_ID_MAX, TOKEN_ID_MIN


def mtsp(**over):
    base = dict(
        kind="multi_turn_shared_prefix",
        prefix_tokens=32,
        prefix_count=3,
        turns=2,
        prompt_tokens=4,
        output_tokens=2,
        conversations=6,
    )
    base.update(over)
    return MultiTurnSharedPrefix(**base)


def test_multi_turn_is_deterministic_per_seed():
    a, _ = build_workload(mtsp(), seed=7)
    b, _ = build_workload(mtsp(), seed=7)
    c, _ = build_workload(mtsp(), seed=8)

    def ids(w):
        return [
            (cv.prefix_token_ids, [t.question_token_ids for t in cv.turns])
            for cv in w.conversations
        ]

    assert ids(a) == ids(b)
    assert ids(a) != ids(c)


def test_multi_turn_shapes_and_working_set():
    workload, report = build_workload(mtsp(), seed=1)
    convs = workload.conversations
    assert len(convs) == 6
    assert all(len(c.prefix_token_ids) == 32 and len(c.turns) == 2 for c in convs)
    assert all(
        len(t.question_token_ids) == 4 and t.output_tokens == 2 for c in convs for t in c.turns
    )
    # conversation i uses prefix i % 3, and equal groups mean identical prefixes
    assert {c.conversation_id: c.prefix_group for c in convs} == {f"c{i}": i % 3 for i in range(6)}
    by_group = {c.prefix_group: c.prefix_token_ids for c in convs}
    assert all(c.prefix_token_ids == by_group[c.prefix_group] for c in convs)
    assert (workload.working_set.unique_prefix_tokens, workload.working_set.history_tokens) == (
        96,
        72,
    )
    assert report["working_set_tokens"] == 168 and report["working_set_over_gpu"] is None


def test_distinct_prefixes_differ_in_their_first_block_and_ids_are_in_range():
    workload, _ = build_workload(mtsp(prefix_count=40, conversations=40, prefix_tokens=16), seed=3)
    first_blocks = {c.prefix_token_ids[:16] for c in workload.conversations}
    assert len(first_blocks) == 40
    assert {c.prefix_token_ids[0] for c in workload.conversations} == set(range(100, 140))
    all_ids = [i for c in workload.conversations for i in c.prefix_token_ids]
    assert min(all_ids) >= TOKEN_ID_MIN and max(all_ids) < TOKEN_ID_MAX


@pytest.mark.parametrize(
    "order, groups",
    [
        ("round_robin", [0, 1, 2, 0, 1, 2]),
        ("grouped", [0, 0, 1, 1, 2, 2]),
    ],
)
def test_reuse_orders(order, groups):
    workload, _ = build_workload(mtsp(reuse_order=order), seed=1)
    assert [c.prefix_group for c in workload.conversations] == groups


def test_random_order_is_a_seeded_permutation_of_the_same_conversations():
    rr, _ = build_workload(mtsp(reuse_order="round_robin"), seed=1)
    rnd, _ = build_workload(mtsp(reuse_order="random"), seed=1)
    assert sorted(c.conversation_id for c in rnd.conversations) == sorted(
        c.conversation_id for c in rr.conversations
    )
    assert [c.conversation_id for c in rnd.conversations] != [
        c.conversation_id for c in rr.conversations
    ]


def test_synthetic_fixed_and_distributed_lengths():
    fixed, _ = build_workload(
        Synthetic(kind="synthetic", prompt_tokens=256, output_tokens=128, requests=5), seed=0
    )
    assert [
        (len(c.turns[0].question_token_ids), c.turns[0].output_tokens) for c in fixed.conversations
    ] == [(256, 128)] * 5
    assert all(c.prefix_group is None and c.prefix_token_ids == () for c in fixed.conversations)
    dist = Distribution(kind="normal", mean=100, stdev=50, min=80, max=120)
    varied, _ = build_workload(
        Synthetic(kind="synthetic", prompt_tokens=dist, output_tokens=4, requests=200), seed=0
    )
    lengths = [len(c.turns[0].question_token_ids) for c in varied.conversations]
    assert min(lengths) == 80 and max(lengths) == 120 and len(set(lengths)) > 10


def test_shared_prefix_groups_inference_perf_shape():
    spec = SharedPrefixGroups(
        kind="shared_prefix_groups",
        num_groups=3,
        system_prompt_len=48,
        question_len=8,
        output_len=4,
        num_prompts_per_group=2,
        reuse_order="grouped",
    )
    workload, _ = build_workload(spec, seed=0)
    assert [c.conversation_id for c in workload.conversations] == [
        "g0p0",
        "g0p1",
        "g1p0",
        "g1p1",
        "g2p0",
        "g2p1",
    ]
    assert workload.working_set.unique_prefix_tokens == 3 * 48
    assert workload.working_set.history_tokens == 6 * (8 + 4)
    assert longest_conversation_tokens(workload) == 48 + 8 + 4


def test_capacity_sizing_multi_turn():
    # h = 2 turns x (4 + 2) = 12; W = 2 x 200 = 400; (400 - 6*12)/32 = 10.25 > 6 conversations,
    # so conversations = prefix_count = round(400 / (32 + 12)) = 9
    spec = mtsp(working_set=WorkingSetTarget(capacity="gpu", factor=2.0))
    workload, report = build_workload(spec, seed=0, capacities=KvCapacities(gpu_tokens=200))
    assert len(workload.conversations) == 9
    assert len({c.prefix_group for c in workload.conversations}) == 9
    assert report["working_set_tokens"] == 9 * 32 + 9 * 12
    assert "prefix_count 3 -> 9" in report["notes"][0]


def test_capacity_sizing_keeps_conversations_when_prefixes_suffice():
    # W = 1.0 x 300 = 300; (300 - 6*12) / 32 = 7.1 -> 7 > 6: conversations follow; with 20 conversations:
    spec = mtsp(conversations=20, working_set=WorkingSetTarget(capacity="cpu", factor=1.0))
    workload, _ = build_workload(
        spec, seed=0, capacities=KvCapacities(gpu_tokens=10, cpu_tokens=600)
    )
    # (600 - 240) / 32 = 11.25 -> 11 prefixes, 20 conversations kept
    assert len(workload.conversations) == 20
    assert len({c.prefix_group for c in workload.conversations}) == 11


def test_capacity_sizing_unknown_capacity_is_noted():
    spec = mtsp(working_set=WorkingSetTarget(capacity="cpu", factor=2.0))
    workload, report = build_workload(spec, seed=0, capacities=KvCapacities(gpu_tokens=100))
    assert len(workload.conversations) == 6
    assert "does not report it" in report["notes"][0]


def test_capacity_sizing_groups():
    spec = SharedPrefixGroups(
        kind="shared_prefix_groups",
        num_groups=3,
        system_prompt_len=100,
        question_len=10,
        output_len=10,
        num_prompts_per_group=5,
        working_set=WorkingSetTarget(factor=3.0),
    )
    workload, report = build_workload(spec, seed=0, capacities=KvCapacities(gpu_tokens=1000))
    assert len({c.prefix_group for c in workload.conversations}) == 15  # 3000 / (100 + 5*20)
    assert report["working_set_over_gpu"] == 3.0


def write_lines(tmp_path, lines):
    path = tmp_path / "conv.jsonl"
    path.write_text("\n".join(json.dumps(x) if not isinstance(x, str) else x for x in lines) + "\n")
    return path


def test_replay_token_ids_and_text(tmp_path):
    path = write_lines(
        tmp_path,
        [
            {
                "conversation_id": "a",
                "prefix_token_ids": [5, 6, 7],
                "turns": [{"prompt_token_ids": [1, 2], "output_tokens": 3}],
            },
            "",
            {
                "prefix_token_ids": [5, 6, 7],
                "turns": [{"prompt_token_ids": [9]}, {"prompt_token_ids": [8, 8]}],
            },
            {"prefix_text": "You are terse.", "turns": [{"prompt": "hi there"}]},
        ],
    )
    workload, _ = build_workload(Replay(kind="replay", path=path, output_tokens=4), seed=0)
    a, b, c = workload.conversations
    assert (a.conversation_id, b.conversation_id, c.conversation_id) == ("a", "l3", "l4")
    assert a.prefix_group == b.prefix_group == 0 and c.prefix_group == 1
    assert [t.output_tokens for t in b.turns] == [4, 4] and a.turns[0].output_tokens == 3
    assert c.turns[0].question_text == "hi there" and c.turns[0].question_token_ids == ()
    assert workload.working_set.unique_prefix_tokens == 3 + 4  # "You are terse." ~ 14 chars / 4


@pytest.mark.parametrize(
    "line, expected",
    [
        ("{not json", "conv.jsonl:2: invalid JSON"),
        ({"turns": []}, "conv.jsonl:2: turns"),
        ({"turns": [{"prompt": "x", "prompt_token_ids": [1]}]}, "conv.jsonl:2: turns.0"),
        ({"turns": [{"prompt": "x"}], "bogus": 1}, "conv.jsonl:2: bogus"),
        ({"turns": [{"prompt": "x"}]}, "conv.jsonl:2: turns.0.output_tokens: missing"),
    ],
)
def test_replay_bad_lines_name_file_and_line(tmp_path, line, expected):
    good = {"turns": [{"prompt_token_ids": [1], "output_tokens": 1}]}
    path = write_lines(tmp_path, [good, line])
    with pytest.raises(UserError) as err:
        build_workload(Replay(kind="replay", path=path), seed=0)
    assert expected in str(err.value) and "\n" not in str(err.value)


def test_replay_missing_file_names_the_field(tmp_path):
    with pytest.raises(UserError, match="workload.path"):
        build_workload(Replay(kind="replay", path=tmp_path / "nope.jsonl"), seed=0)


def test_a_uniform_with_min_and_max_spans_them_without_a_stdev():
    import numpy as np

    from kvbench.spec.experiment import Distribution
    from kvbench.workload.tokens import sample_count

    rng = np.random.default_rng(3)
    dist = Distribution(kind="uniform", mean=3200, min=256, max=6144)
    counts = [sample_count(rng, dist) for _ in range(400)]
    assert min(counts) >= 256 and max(counts) <= 6144
    assert min(counts) < 1000 and max(counts) > 5400  # spread over the range, not the mean
    fixed = Distribution(kind="normal", mean=300, min=10, max=900)  # stdev 0: the mean
    assert {sample_count(rng, fixed) for _ in range(20)} == {300}
