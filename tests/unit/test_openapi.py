"""The OpenAPI document: every route, the security on each protected one, a submit per job type."""

from __future__ import annotations

import re

from azure.functions.decorators.http import HttpTrigger

from controllers.registry import registry
from schemas.records import Json
from tests.functions import FUNCTIONS
from triggers.openapi import openapi_document

OPEN = {"health", "openapi"}


def doc() -> Json:
    return openapi_document(registry, "test")


def operations() -> dict[str, tuple[str, str, Json]]:
    return {
        op["operationId"]: (method.upper(), path, op)
        for path, item in doc()["paths"].items()
        for method, op in item.items()
    }


def test_it_is_openapi_3_1_with_the_security_schemes() -> None:
    assert doc()["openapi"] == "3.1.0"
    assert doc()["components"]["securitySchemes"] == {
        "apiKeyHeader": {"type": "apiKey", "in": "header", "name": "x-functions-key"},
        "apiKeyQuery": {"type": "apiKey", "in": "query", "name": "code"},
        "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
    }


def test_every_http_function_has_its_operations_and_every_operation_a_route() -> None:
    routes = set()
    for function in FUNCTIONS.values():
        trigger = function.get_trigger()
        if isinstance(trigger, HttpTrigger):
            for method in trigger.methods or ():
                name = str(getattr(method, "value", method)).upper()
                routes.add((name, "/" + re.sub(r"\{[^}]+\}", "{}", str(trigger.route))))
    documented = {(m, re.sub(r"\{[^}]+\}", "{}", p)) for m, p, _ in operations().values()}
    submit_paths = {("POST", f"/jobs/{c.job_type}") for c in registry}

    assert documented - submit_paths == routes - {("POST", "/jobs/{}")}
    assert submit_paths <= documented


def test_each_protected_operation_names_its_security_and_answers_401_and_403() -> None:
    for op_id, (_, _, op) in operations().items():
        if op_id in OPEN:
            assert op["security"] == [], op_id
            continue
        assert op["security"] == [{"apiKeyHeader": []}, {"apiKeyQuery": []}, {"bearer": []}]
        assert {"400", "401", "403"} <= set(op["responses"]), op_id
        assert op["responses"]["401"]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/ErrorBody"
        }


def test_each_job_type_has_a_submit_operation_with_its_parameter_schema() -> None:
    ops = operations()
    for controller in registry:
        _, _, op = ops[f"submit_{controller.job_type}"]
        schema = op["requestBody"]["content"]["application/json"]["schema"]
        name = schema["$ref"].rsplit("/", 1)[1]
        assert doc()["components"]["schemas"][name]["properties"].keys() == (
            controller.parameters.model_json_schema()["properties"].keys()
        )


def test_query_parameters_carry_their_ranges() -> None:
    params = {p["name"]: p["schema"] for p in operations()["list_tasks"][2]["parameters"]}

    assert params["limit"] == {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}
    assert params["stage"] == {"type": "integer", "minimum": 1, "maximum": 1000}
    assert "failed" in params["status"]["enum"]


def test_every_reference_resolves() -> None:
    text = str(doc())
    refs = set(re.findall(r"#/components/schemas/([A-Za-z0-9_-]+)", text))
    assert refs and refs <= set(doc()["components"]["schemas"])
