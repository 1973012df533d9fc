"""Whether services can be deployed: one pipeline of rules that reports every problem at once.

    each service alone        DEFINITION_RULES   outputs outside own inputs, providers defined,
                                                 event sources known, inputs on S3 stores
    the services together     duplicate names, loops through the buckets (cycles.py)
    this platform             the backend each service names is enabled
                                     │
                                     ▼
                              [Problem, ...]     empty: the services may be deployed

The FDL loader runs the rules of a service alone too (`definition_problems`), so `conveyor apply`
lists them with the file's line numbers before anything is sent; the catalog runs the whole
pipeline on every apply, whoever sends it. Field names are relative to each service
(`output[0].path`); `problems` prefixes them with the service's name.

Pure functions over `Service` models and what the caller says about the platform: no ledger,
no storage.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator

from conveyor.control.cycles import cycle_problems
from conveyor.errors import Problem
from conveyor.events.sources import SOURCES, source_kind
from conveyor.model.kinds import DEFAULT_PROVIDER, INPUT_KINDS
from conveyor.model.service import Service

Rule = Callable[[Service], Iterator[Problem]]


def outputs_outside_own_inputs(service: Service) -> Iterator[Problem]:
    """An output at or under the service's own input would trigger it again with every result."""
    for o_index, output in enumerate(service.output):
        for i_index, input_ in enumerate(service.input):
            if output.is_within(input_):
                yield Problem(
                    field=f"output[{o_index}].path",
                    message=(
                        f"{output.path!r} is the service's own input {input_.path!r} (input[{i_index}])"
                        " or under it: every result would trigger the service again"
                    ),
                )


def providers_defined(service: Service) -> Iterator[Problem]:
    """Every `<kind>.<id>` an input or output names is defined under `storage_providers`."""
    for side, paths in (("input", service.input), ("output", service.output)):
        for index, io in enumerate(paths):
            if io.storage_provider != DEFAULT_PROVIDER and service.provider_settings(io.storage_provider) is None:
                yield Problem(
                    field=f"{side}[{index}].storage_provider",
                    message=f"{io.storage_provider!r} is not defined under storage_providers.{io.kind}",
                )


def known_event_sources(service: Service) -> Iterator[Problem]:
    """The `events:` setting of each input's provider names an event source Conveyor has."""
    for index, io in enumerate(service.input):
        chosen = source_kind(service, io)
        if chosen not in SOURCES:
            yield Problem(
                field=f"input[{index}].storage_provider",
                message=(
                    f"events: {chosen!r} of {io.storage_provider!r} is not an event source; "
                    f"use one of {', '.join(sorted(SOURCES))}"
                ),
            )


def inputs_on_s3_stores(service: Service) -> Iterator[Problem]:
    """Only S3-compatible stores send bucket notifications, so only they can trigger a service."""
    for index, io in enumerate(service.input):
        if io.kind not in INPUT_KINDS:
            yield Problem(
                field=f"input[{index}].storage_provider",
                message=f"inputs on {io.kind} are not supported: inputs must be on S3-compatible stores "
                f"({', '.join(INPUT_KINDS)})",
            )


DEFINITION_RULES: tuple[Rule, ...] = (
    outputs_outside_own_inputs,
    providers_defined,
    known_event_sources,
    inputs_on_s3_stores,
)


def definition_problems(service: Service) -> list[Problem]:
    """What is wrong with one service whatever else is deployed; fields relative to the service."""
    return [problem for rule in DEFINITION_RULES for problem in rule(service)]


def duplicate_names(services: list[Service]) -> list[str]:
    names = [s.name for s in services]
    return sorted({n for n in names if names.count(n) > 1})


def problems(
    services: list[Service],
    *,
    deployed: list[Service],
    backend_enabled: Callable[[Service], str | None],
) -> list[Problem]:
    """Every problem that stops `services` from being deployed together over `deployed`.

    `backend_enabled` returns None when the service's backend runs here, else why not. A service of
    `services` replaces the deployed one of the same name.
    """
    found = [
        Problem(field=f"{service.name}.{p.field}", message=p.message)
        for service in services
        for p in definition_problems(service)
    ]
    found += [Problem(field=name, message="is defined more than once") for name in duplicate_names(services)]
    found += [
        Problem(field=f"{service.name}.backend", message=reason)
        for service in services
        if (reason := backend_enabled(service)) is not None
    ]
    found += _new_loops(services, deployed)
    return found


def _new_loops(services: list[Service], deployed: Collection[Service]) -> list[Problem]:
    applying = {service.name for service in services}
    others = [service for service in deployed if service.name not in applying]
    return cycle_problems([*services, *others], changed=applying)
