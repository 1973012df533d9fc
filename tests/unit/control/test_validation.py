"""The deploy pipeline's rules: each service alone, the services together, and this platform."""

from __future__ import annotations

from typing import Any

import pytest

from conveyor.control.validation import (
    definition_problems,
    duplicate_names,
    outputs_outside_own_inputs,
    problems,
)
from conveyor.model.service import Service


def make_service(**fields: Any) -> Service:
    """A valid service with `fields` overriding the minimal definition."""
    data: dict[str, Any] = {"name": "grayify", "image": "ghcr.io/grycap/imagemagick", "script": "echo hi\n"}
    data.update(fields)
    return Service.model_validate(data)


# ---- the rules of a service alone -------------------------------------------------------------


def problem_fields(service: Service) -> list[str]:
    return [p.field for p in definition_problems(service)]


def test_definition_none_for_a_sound_service() -> None:
    service = make_service(input=[{"path": "bkt/in"}], output=[{"path": "bkt/out"}])
    assert definition_problems(service) == []


def test_definition_output_equal_to_own_input() -> None:
    service = make_service(input=[{"path": "bkt/in"}], output=[{"path": "bkt/out"}, {"path": "bkt/in"}])
    problems = definition_problems(service)
    assert [p.field for p in problems] == ["output[1].path"]
    assert "input[0]" in problems[0].message
    assert "trigger the service again" in problems[0].message


def test_definition_output_under_own_input() -> None:
    service = make_service(input=[{"path": "bkt/in"}], output=[{"path": "bkt/in/results"}])
    assert problem_fields(service) == ["output[0].path"]


def test_definition_output_in_a_whole_bucket_input() -> None:
    # minio/s3 bare names go into the service's bucket, so a whole-bucket input needs another kind
    service = make_service(
        input=[{"storage_provider": "webdav.d", "path": "bkt"}],
        output=[{"storage_provider": "webdav.d", "path": "bkt/out"}],
        storage_providers={"webdav": {"d": {"hostname": "dav.example.org"}}},
    )
    assert [p.field for p in outputs_outside_own_inputs(service)] == ["output[0].path"]


@pytest.mark.parametrize(
    ("input_", "output"),
    [
        ({"path": "bkt/in"}, {"path": "bkt/inx"}),
        ({"path": "bkt/in"}, {"path": "cat/in"}),
        ({"path": "bkt/in/sub"}, {"path": "bkt/in"}),
        ({"path": "bkt/in"}, {"path": "bkt/in", "storage_provider": "s3.mine"}),
    ],
)
def test_definition_not_flagged(input_: dict[str, str], output: dict[str, str]) -> None:
    service = make_service(input=[input_], output=[output], storage_providers={"s3": {"mine": {}}})
    assert definition_problems(service) == []


def test_definition_undefined_provider_reference() -> None:
    service = make_service(
        input=[{"storage_provider": "s3.mine", "path": "bkt/in"}],
        output=[
            {"storage_provider": "minio.default", "path": "bkt/out"},
            {"storage_provider": "s3.other", "path": "o"},
        ],
        storage_providers={"s3": {"mine": {"access_key": "a", "secret_key": "s"}}},
    )
    problems = definition_problems(service)
    assert [p.field for p in problems] == ["output[1].storage_provider"]
    assert "'s3.other' is not defined under storage_providers.s3" in problems[0].message


def test_definition_undefined_kind_section() -> None:
    service = make_service(input=[{"storage_provider": "minio.external", "path": "bkt/in"}])
    assert problem_fields(service) == ["input[0].storage_provider"]


def test_duplicate_names() -> None:
    services = [make_service(name=n) for n in ("b", "a", "b", "c", "a", "b")]
    assert duplicate_names(services) == ["a", "b"]
    assert duplicate_names([make_service(name="x"), make_service(name="y")]) == []
    assert duplicate_names([]) == []


def test_an_input_on_a_store_without_notifications() -> None:
    service = make_service(
        input=[{"storage_provider": "webdav.d", "path": "bkt/in"}],
        storage_providers={"webdav": {"d": {"hostname": "dav.example.org"}}},
    )
    [problem] = definition_problems(service)
    assert problem.field == "input[0].storage_provider"
    assert problem.message.startswith("inputs on webdav are not supported: inputs must be on S3-compatible stores")


def test_an_unknown_event_source() -> None:
    service = make_service(
        input=[{"storage_provider": "s3.lab", "path": "bkt/in"}],
        storage_providers={"s3": {"lab": {"endpoint": "http://lab:9000", "events": "carrier-pigeon"}}},
    )
    [problem] = definition_problems(service)
    assert problem.field == "input[0].storage_provider"
    assert "events: 'carrier-pigeon' of 's3.lab' is not an event source; use one of minio, poll" in problem.message


# ---- the whole pipeline ----------------------------------------------------------------------


def backend_of(service: Service) -> str | None:
    return None if service.backend in (None, "local") else f"backend {service.backend!r} is not enabled"


def test_every_problem_of_every_service_at_once() -> None:
    """A definition problem, a duplicate, a disabled backend and a loop, in one answer."""
    services = [
        make_service(
            name="a",
            input=[{"path": "bkt/in"}],
            output=[{"path": "bkt/in/x"}, {"storage_provider": "s3.nope", "path": "other/o"}],
        ),
        make_service(name="b", backend="slurm", input=[{"path": "ring/1"}], output=[{"path": "ring/2"}]),
        make_service(name="b", input=[{"path": "ring/1"}], output=[{"path": "ring/2"}]),
        make_service(name="c", input=[{"path": "ring/2"}], output=[{"path": "ring/1"}]),
    ]
    found = problems(services, deployed=[], backend_enabled=backend_of)
    assert [p.field for p in found] == [
        "a.output[0].path",
        "a.output[1].storage_provider",
        "b",
        "b.backend",
        "b",
    ]
    assert found[2].message == "is defined more than once"
    assert found[3].message == "backend 'slurm' is not enabled"
    assert found[4].message.startswith("services b → c → b form a loop")


def test_a_new_definition_replaces_the_deployed_one_of_its_name() -> None:
    """The deployed `b` closes a loop with the new `a`; the new `b` does not."""
    deployed = [
        make_service(name="a", input=[{"path": "ring/1"}], output=[{"path": "ring/0"}]),
        make_service(name="b", input=[{"path": "ring/2"}], output=[{"path": "ring/1"}]),
    ]
    new_a = make_service(name="a", input=[{"path": "ring/1"}], output=[{"path": "ring/2"}])
    looping = problems([new_a], deployed=deployed, backend_enabled=backend_of)
    assert [p.field for p in looping] == ["a"]
    new_b = make_service(name="b", input=[{"path": "ring/2"}], output=[{"path": "ring/3"}])
    assert problems([new_a, new_b], deployed=deployed, backend_enabled=backend_of) == []
