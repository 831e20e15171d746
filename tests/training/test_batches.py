"""Batch planners: uniform draws, S2Sched's composed batches, held-out validation, generic routes."""

import numpy as np
import pytest

from components.modeling.tmole import INSTRUCTION, UNIVERSAL
from components.training.batches import EMBEDDING, GENERATIVE, ScheduledPlanner, UniformPlanner, route_names
from components.training.data import Example, task_name
from components.training.s2sched import S2SchedConfig

pytestmark = pytest.mark.unit


def examples(per_task: int = 20) -> list[Example]:
    out = []
    for t, family in enumerate(["general", "likes", "churn"]):
        for k in range(per_task):
            instruction = None if family == "general" else f"about {family}?"
            out.append(
                Example(user_id=k, instruction=instruction, answer=f"{family} {k}", task_id=t, family=family)
            )
    return out


def test_route_names_send_a_share_of_instructed_examples_to_the_generic_route():
    ex = examples(200)
    names = route_names(ex, 0.25, np.random.default_rng(0))
    generic = [n == INSTRUCTION for n, e in zip(names, ex, strict=True) if e.instruction is not None]
    assert 0.18 < np.mean(generic) < 0.32
    assert all(n == UNIVERSAL for n, e in zip(names, ex, strict=True) if e.instruction is None)
    assert route_names(ex, 0.0, np.random.default_rng(0)) == [task_name(e) for e in ex]


def test_uniform_planner_shares_records_between_branches_and_shards_processes():
    ex = examples()
    plans = [
        UniformPlanner(ex, 4, 2, accum=2, seed=0, generic_share=0.0).plan(0, world=2, rank=r) for r in (0, 1)
    ]
    assert all(len(p) == 2 for p in plans)
    mb = plans[0][0]
    assert len(mb.emb) == 4 and mb.gen == mb.emb[:2]
    seen = [id(e) for p in plans for m in p for e in m.emb]
    assert len(set(seen)) == 16  # one global draw, no example twice


def test_scheduled_planner_holds_validation_out_and_follows_the_counts():
    ex = examples()
    cfg = S2SchedConfig(val_per_task=4, eval_every=5, window=3)
    planner = ScheduledPlanner(ex, 6, 3, accum=1, seed=0, generic_share=0.0, config=cfg, total_steps=50)
    val = {id(e) for v in planner.validation.values() for e in v}
    assert {len(v) for v in planner.validation.values()} == {4}
    mb = planner.plan(0, world=1, rank=0)[0]
    assert len(mb.emb) == 6 and len(mb.gen) == 3
    assert not {id(e) for e in mb.emb + mb.gen} & val
    assert sorted(task_name(e) for e in mb.emb) == sorted(
        ["churn", "likes", UNIVERSAL] * 2
    )  # uniform at first
    # the "likes" task falls fastest, "churn" stays flat: churn gains embedding share
    for step, (likes, churn) in enumerate([(1.0, 1.0), (0.6, 0.99), (0.3, 0.98), (0.1, 0.97)]):
        planner.record(
            step * 5 + 5,
            {
                EMBEDDING: {"likes": likes, "churn": churn, UNIVERSAL: 1.0 - 0.01 * step},
                GENERATIVE: {"likes": 1.0, "churn": 1.0, UNIVERSAL: 1.0},
            },
        )
    ratios = planner.scheduler.ratios(EMBEDDING)
    assert ratios["churn"] > ratios["likes"]
    state = planner.state_dict()
    twin = ScheduledPlanner(ex, 6, 3, accum=1, seed=0, generic_share=0.0, config=cfg, total_steps=50)
    twin.load_state_dict(state)
    a, b = planner.plan(30, 1, 0)[0], twin.plan(30, 1, 0)[0]
    assert [id(e) for e in a.emb] == [id(e) for e in b.emb]


def test_task_batches_draw_the_embedding_batch_from_few_tasks_by_their_ratios():
    ex = examples(60)
    cfg = S2SchedConfig(val_per_task=4, eval_every=5, window=3)

    def planner():
        return ScheduledPlanner(ex, 8, 4, accum=2, seed=0, generic_share=0.0, config=cfg, total_steps=400,
                                task_batches=2)  # fmt: skip

    a, b = planner(), planner()
    seen = {}
    for step in range(300):
        mbs = a.plan(step, world=1, rank=0)
        assert [[id(e) for e in m.emb] for m in mbs] == [[id(e) for e in m.emb] for m in b.plan(step, 1, 0)]
        tasks = [[task_name(e) for e in m.emb] for m in mbs]
        assert all(len(set(t)) == 1 and len(t) == 8 for t in tasks)  # one task per micro-batch of 8
        assert tasks[0][0] != tasks[1][0]  # two different tasks per step
        assert len(mbs[0].gen) == 4 and len({task_name(e) for m in mbs for e in m.gen}) >= 2  # unchanged
        for t in tasks:
            seen[t[0]] = seen.get(t[0], 0) + 1
    assert set(seen) == {"churn", "likes", UNIVERSAL}
    assert all(150 < n < 250 for n in seen.values())  # uniform ratios at first: each task in 2/3 of steps
    # a task whose ratio rises is drawn more often
    a.scheduler._branch(EMBEDDING).ratios = [0.1, 0.1, 0.8]  # tasks sorted: churn, likes, universal
    later = [task_name(e) for s in range(300, 400) for m in a.plan(s, 1, 0) for e in m.emb[:1]]
    assert later.count(UNIVERSAL) > 90
