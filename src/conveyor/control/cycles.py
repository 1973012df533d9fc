"""Services that trigger each other in a circle, found before they are deployed.

A service's results land under its outputs, and every service with an input over the same
place runs on them. Following these "S's output can trigger T" links back to a service means
one uploaded file makes jobs forever: at run time only the lineage limit stops such a chain,
by killing its jobs. So `apply` refuses a loop, naming the services and the paths that close it.

Pure functions over `Service` models: no ledger, no storage.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Iterator
from dataclasses import dataclass

from conveyor.errors import Problem
from conveyor.model.kinds import DEFAULT_PROVIDER
from conveyor.model.service import Service, StorageIO

MAX_LOOPS = 20
"""Loops reported at most: a bucket shared by many services makes exponentially many, and the
shortest few are enough to show what to change."""
MAX_STEPS = 200_000
"""Edges the loop search may try (well under a second). Ordinary workflows need a few hundred;
only a contrived graph gets near, and then the lineage limit still stops a loop at run time."""


@dataclass(frozen=True)
class Link:
    """Why `source` can trigger `target`: a path `source` writes overlaps a path `target` reads."""

    source: str
    target: str
    output: StorageIO
    input: StorageIO

    def describe(self) -> str:
        written, read = _shown(self.output), _shown(self.input)
        if self.output.path == self.input.path:
            return f"{self.source} writes {written}, which {self.target} reads"
        if self.output.is_within(self.input):
            return f"{self.source} writes {written}, inside {read}, which {self.target} reads"
        return f"{self.source} writes {written}, and {self.target} reads {read} inside it"


def cycle_problems(services: list[Service], *, changed: Collection[str] | None = None) -> list[Problem]:
    """One problem per distinct loop among `services` (at most MAX_LOOPS).

    With `changed`, only loops through one of those services count: the ones a deployment of
    them would close, not old loops it leaves as they were. The field is the loop's first
    service (one of `changed` when given).
    """
    # A name defined twice is a problem of its own (validation.duplicate_names); here it is one node.
    wanted = list(dict.fromkeys(s.name for s in services if changed is None or s.name in changed))
    order = list(dict.fromkeys([*wanted, *(s.name for s in services)]))
    links = find_links(services)
    problems: list[Problem] = []
    for cycle in elementary_cycles(order, _successors(links), starts=len(wanted)):
        problems.append(_loop_problem(cycle, links))
        if len(problems) == MAX_LOOPS:
            break
    return problems


def find_links(services: list[Service]) -> dict[tuple[str, str], Link]:
    """Every pair (S, T) where S's output can trigger T, with the first pair of paths that does.

    A service's link to itself counts only when an input lies strictly under one of its
    outputs: an output under its own input is already a problem of the service alone
    (`validation.outputs_outside_own_inputs`), and it would be reported twice.
    """
    links: dict[tuple[str, str], Link] = {}
    for source in services:
        for target in services:
            link = _first_link(source, target)
            if link is not None:
                links[source.name, target.name] = link
    return links


def _first_link(source: Service, target: Service) -> Link | None:
    for output in source.output:
        for input_ in target.input:
            if source.name == target.name and output.is_within(input_):
                continue  # outputs_outside_own_inputs reports it
            if output.is_within(input_) or input_.is_within(output):
                return Link(source.name, target.name, output, input_)
    return None


def _successors(links: dict[tuple[str, str], Link]) -> dict[str, list[str]]:
    successors: dict[str, list[str]] = defaultdict(list)
    for source, target in links:
        successors[source].append(target)
    return successors


def elementary_cycles(
    nodes: list[str], successors: dict[str, list[str]], *, starts: int, max_steps: int = MAX_STEPS
) -> Iterator[list[str]]:
    """Every elementary cycle through one of the first `starts` nodes, each once, shortest first.

    A cycle is listed from its earliest node in `nodes` and searched only from there, so it is
    never found twice. Shortest first because a short loop is the one a user can read and fix;
    a depth-first search would list the longest first. The search stops after `max_steps`
    edges tried, so a pathological graph cannot stall an apply.
    """
    budget = _Budget(max_steps)
    searches = [_CyclesThrough(nodes[i], set(nodes[i:]), successors, budget) for i in range(starts)]
    for length in range(1, len(nodes) + 1):
        for search in searches:
            yield from search.of_length(length)
            if budget.is_spent:
                return


class _Budget:
    def __init__(self, steps: int) -> None:
        self.left = steps

    @property
    def is_spent(self) -> bool:
        return self.left <= 0


class _CyclesThrough:
    """Cycles that start and end at `start` and visit only `allowed` nodes."""

    def __init__(self, start: str, allowed: set[str], successors: dict[str, list[str]], budget: _Budget) -> None:
        self.start = start
        self.successors = {n: [m for m in successors.get(n, []) if m in allowed] for n in allowed}
        self.distance = _distances_to(start, self.successors)
        self.budget = budget

    def of_length(self, length: int) -> Iterator[list[str]]:
        yield from self._extend([self.start], length)

    def _extend(self, path: list[str], length: int) -> Iterator[list[str]]:
        for following in self.successors[path[-1]]:
            if self.budget.is_spent:
                return
            self.budget.left -= 1
            if following == self.start:
                if len(path) == length:
                    yield list(path)
            # Only a node that can still get back in the edges left is worth a step.
            elif following not in path and self.distance.get(following, length + 1) <= length - len(path):
                path.append(following)
                yield from self._extend(path, length)
                path.pop()


def _distances_to(target: str, successors: dict[str, list[str]]) -> dict[str, int]:
    """Edges from each node to `target` on a shortest path (breadth first on reversed edges)."""
    predecessors: dict[str, list[str]] = defaultdict(list)
    for node, followers in successors.items():
        for following in followers:
            predecessors[following].append(node)
    distance = {target: 0}
    frontier = [target]
    while frontier:
        nearer = frontier
        frontier = []
        for node in nearer:
            for previous in predecessors[node]:
                if previous not in distance:
                    distance[previous] = distance[node] + 1
                    frontier.append(previous)
    return distance


def _loop_problem(cycle: list[str], links: dict[tuple[str, str], Link]) -> Problem:
    steps = [links[source, target] for source, target in zip(cycle, [*cycle[1:], cycle[0]], strict=True)]
    reasons = "; ".join(step.describe() for step in steps)
    if len(cycle) == 1:
        message = f"service {cycle[0]} forms a loop with itself: {reasons}"
    else:
        message = f"services {' → '.join([*cycle, cycle[0]])} form a loop: {reasons}"
    return Problem(field=cycle[0], message=message)


def _shown(io: StorageIO) -> str:
    return io.path if io.storage_provider == DEFAULT_PROVIDER else f"{io.storage_provider}:{io.path}"
