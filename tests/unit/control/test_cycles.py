"""Loops among services, found from their paths alone before anything is deployed."""

from __future__ import annotations

import itertools
from typing import Any

from conveyor.control.cycles import MAX_LOOPS, cycle_problems, elementary_cycles
from conveyor.control.validation import definition_problems
from conveyor.model.service import Service


def svc(name: str, inputs: list[Any], outputs: list[Any], **fields: Any) -> Service:
    """Paths are `bucket/folder` strings, or dicts with a storage_provider."""
    return Service.model_validate(
        {
            "name": name,
            "image": "busybox",
            "script": "true",
            "input": [i if isinstance(i, dict) else {"path": i} for i in inputs],
            "output": [o if isinstance(o, dict) else {"path": o} for o in outputs],
            **fields,
        }
    )


def messages(services: list[Service], **kwargs: Any) -> list[str]:
    return [f"{p.field}: {p.message}" for p in cycle_problems(services, **kwargs)]


def test_two_services_that_feed_each_other_form_a_loop() -> None:
    services = [svc("a", ["loop/in"], ["loop/mid"]), svc("b", ["loop/mid"], ["loop/in"])]

    assert messages(services) == [
        "a: services a → b → a form a loop: a writes loop/mid, which b reads; b writes loop/in, which a reads"
    ]


def test_a_loop_through_three_services_is_reported_once_from_its_first_service() -> None:
    services = [
        svc("c", ["ring/3"], ["ring/1"]),
        svc("a", ["ring/1"], ["ring/2"]),
        svc("b", ["ring/2"], ["ring/3"]),
    ]

    problems = cycle_problems(services)

    assert len(problems) == 1
    assert problems[0].field == "c"
    assert problems[0].message == (
        "services c → a → b → c form a loop: c writes ring/1, which a reads; a writes ring/2, which b reads; "
        "b writes ring/3, which c reads"
    )


def test_an_input_under_the_own_output_is_a_loop_of_one() -> None:
    services = [svc("self", ["own/x/in"], ["own/x"])]

    assert messages(services) == [
        "self: service self forms a loop with itself: self writes own/x, and self reads own/x/in inside it"
    ]


def test_an_output_under_the_own_input_is_left_to_the_definition_rules() -> None:
    service = svc("self", ["own/x"], ["own/x/out"])

    assert cycle_problems([service]) == []
    assert [p.field for p in definition_problems(service)] == ["output[0].path"]


def test_paths_that_share_only_a_name_prefix_do_not_overlap() -> None:
    services = [
        svc("a", ["pfx/in"], ["pfx/inx"]),
        svc("b", ["pfx/inx"], ["pfx/inxy"]),
        svc("c", ["pfx/inxy"], ["pfx/in2"]),
    ]

    assert cycle_problems(services) == []


def test_outputs_inside_and_around_an_input_both_link() -> None:
    inside = [svc("a", ["ovr/in"], ["ovr/mid"]), svc("b", ["ovr/mid"], ["ovr/in/deeper"])]
    around = [svc("a", ["ovr/in/deeper"], ["ovr/mid"]), svc("b", ["ovr/mid"], ["ovr/in"])]

    assert "b writes ovr/in/deeper, inside ovr/in, which a reads" in messages(inside)[0]
    assert "b writes ovr/in, and a reads ovr/in/deeper inside it" in messages(around)[0]


def test_the_same_paths_on_different_providers_do_not_link() -> None:
    other = {"s3": {"other": {"access_key": "k", "secret_key": "s"}}}
    services = [
        svc("a", ["loop/in"], [{"path": "loop/mid", "storage_provider": "s3.other"}], storage_providers=other),
        svc("b", ["loop/mid"], ["loop/in"]),
    ]

    assert cycle_problems(services) == []


def test_a_diamond_without_a_way_back_is_no_loop() -> None:
    services = [
        svc("split", ["dia/in"], ["dia/left", "dia/right"]),
        svc("left", ["dia/left"], ["dia/join"]),
        svc("right", ["dia/right"], ["dia/join"]),
        svc("join", ["dia/join"], ["dia/out"]),
    ]

    assert cycle_problems(services) == []


def test_every_distinct_loop_is_its_own_problem() -> None:
    # b feeds both a (a → b → a) and c, and c feeds a (a → b → c → a).
    services = [
        svc("a", ["multi/a"], ["multi/b"]),
        svc("b", ["multi/b"], ["multi/a", "multi/c"]),
        svc("c", ["multi/c"], ["multi/a"]),
    ]

    loops = [p.message.split(":")[0] for p in cycle_problems(services)]

    assert sorted(loops) == ["services a → b → a form a loop", "services a → b → c → a form a loop"]


def test_only_loops_through_the_changed_services_count_and_name_one_of_them() -> None:
    old_loop = [svc("x", ["old/1"], ["old/2"]), svc("y", ["old/2"], ["old/1"])]
    closing = [svc("b", ["new/mid"], ["new/in"]), svc("a", ["new/in"], ["new/mid"])]

    problems = cycle_problems([closing[0], *old_loop, closing[1]], changed={"b"})

    assert [p.field for p in problems] == ["b"]
    assert problems[0].message.startswith("services b → a → b form a loop")


def test_a_bucket_every_service_shares_reports_a_bounded_number_of_the_shortest_loops() -> None:
    services = [svc(f"s{i}", [f"shared/all/in{i}"], ["shared/all"]) for i in range(40)]

    problems = cycle_problems(services, changed={"s7"})

    assert len(problems) == MAX_LOOPS
    assert problems[0].message.startswith("service s7 forms a loop with itself")
    assert all(p.message.startswith("services s7 → s") and p.message.count("→") == 2 for p in problems[1:])


def test_the_search_gives_up_after_its_step_budget() -> None:
    nodes = [f"n{i}" for i in range(30)]
    successors = {n: list(nodes) for n in nodes}

    assert len(list(elementary_cycles(nodes, successors, starts=30, max_steps=500))) < 500


def test_elementary_cycles_finds_each_cycle_of_a_complete_graph_once() -> None:
    nodes = ["a", "b", "c", "d"]
    successors = {n: [m for m in nodes if m != n] for n in nodes}

    cycles = list(elementary_cycles(nodes, successors, starts=len(nodes)))

    # Cycles of length k in the complete digraph on 4 nodes: C(4, k) * (k - 1)!
    expected = sum(len(list(itertools.combinations(nodes, k))) * [1, 1, 2, 6][k - 1] for k in (2, 3, 4))
    assert len(cycles) == expected == 20
    assert len({frozenset(zip(c, [*c[1:], c[0]], strict=True)) for c in cycles}) == expected
