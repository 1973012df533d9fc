"""The published OpenAPI document is valid OpenAPI 3.1, so generated clients and fuzzers can read it."""

from __future__ import annotations

from openapi_spec_validator import OpenAPIV31SpecValidator

from conveyor.api.app import create_app
from conveyor.settings import ApiSettings


def test_the_openapi_document_is_valid() -> None:
    spec = create_app(ApiSettings()).openapi()
    assert [error.message for error in OpenAPIV31SpecValidator(spec).iter_errors()] == []


def test_routes_conveyor_does_not_support_declare_their_path_parameters() -> None:
    spec = create_app(ApiSettings()).openapi()
    operation = spec["paths"]["/system/volumes/{volume}"]["delete"]
    assert [(p["name"], p["in"], p["required"]) for p in operation["parameters"]] == [("volume", "path", True)]
    assert "501" in operation["responses"]
