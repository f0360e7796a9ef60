"""What /openapi.json says, pinned where it was wrong before: submissions are multipart with
the file required, form fields are never null, crop's pattern is the validator's rule, errors
have the API's own body, links name real operations, and every 405's Allow is the path's
documented methods (the page's mount included). Fast: the app in process, on Azurite."""

from __future__ import annotations

import re

import jsonschema_rs
import pytest
from hypothesis import given, strategies as st
from pydantic import ValidationError

from processing.jobs.options import CROP_PATTERN, JobOptions

METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE")


@pytest.fixture
def spec(client) -> dict:
    response = client.get("/openapi.json")
    assert response.status_code == 200
    return response.json()


def operations(spec: dict):
    for path, methods in spec["paths"].items():
        for method, operation in methods.items():
            yield path, method, operation


@pytest.mark.parametrize("path, file_field", [("/api/jobs", "file"), ("/api/batches", "files")])
def test_submissions_are_multipart_and_need_their_files(spec, path, file_field):
    body = spec["paths"][path]["post"]["requestBody"]
    assert body["required"] and list(body["content"]) == ["multipart/form-data"]
    name = body["content"]["multipart/form-data"]["schema"]["$ref"].rsplit("/", 1)[-1]
    form = spec["components"]["schemas"][name]
    assert form["required"] == [file_field] and form["additionalProperties"] is False
    # A form carries no null: optional fields are absent, never `anyOf [..., null]`.
    assert [field for field, schema in form["properties"].items() if "anyOf" in schema or "null" in str(schema)] == []
    assert form["properties"]["crop"]["pattern"] == CROP_PATTERN


def test_operation_ids_tags_and_error_bodies(spec):
    ids = [operation["operationId"] for _, _, operation in operations(spec)]
    assert sorted(ids) == sorted([
        "submit_job", "get_job", "get_job_result", "get_job_input", "get_job_before", "get_job_face", "delete_job",
        "restore_chosen",
        "submit_batch", "get_batch", "get_batch_results", "delete_batch", "get_health", "get_info"])
    assert [tag["name"] for tag in spec["tags"]] == ["jobs", "batches", "meta"]
    assert "HTTPValidationError" not in str(spec)  # FastAPI's 422 body; this API answers ErrorResponse
    for path, method, operation in operations(spec):
        for status, answer in operation["responses"].items():
            if int(status) >= 400 and operation["operationId"] != "get_health":
                assert answer["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorResponse"), (path, status)


def test_links_lead_from_each_submission_to_every_operation_on_what_it_made(spec):
    by_id = {operation["operationId"]: operation for _, _, operation in operations(spec)}
    reached = set()
    for _, _, operation in operations(spec):
        for answer in operation["responses"].values():
            for link in answer.get("links", {}).values():
                target = by_id[link["operationId"]]
                parameters = {p["name"] for p in target.get("parameters", ()) if p["in"] == "path"}
                assert set(link["parameters"]) <= parameters and all(
                    value.startswith("$response.body#/") for value in link["parameters"].values())
                reached.add(link["operationId"])
    takes_an_id = {operation["operationId"] for path, _, operation in operations(spec) if "_id}" in path}
    assert reached == takes_an_id


def test_405_allows_exactly_the_documented_methods_on_every_path(client, spec):
    for path, documented in spec["paths"].items():
        concrete = re.sub(r"\{[^}]+\}", "0", path)
        # HEAD is answered wherever GET is (RFC 9110 9.3.2), without being a documented operation.
        allowed = sorted({method.upper() for method in documented} | ({"HEAD"} if "get" in documented else set()))
        for method in set(METHODS) - set(allowed):
            response = client.request(method, concrete)
            assert response.status_code == 405, (method, path, response.status_code)
            assert response.headers["allow"] == ", ".join(allowed), (method, path)
            if method != "HEAD":
                assert response.json()["error"]["code"] == "method_not_allowed"
    # The page answers GET and HEAD, and says so; an unknown /api path is the API's 404, not the page's 405.
    assert client.post("/").headers["allow"] == "GET, HEAD"
    assert client.post("/api/nothing").json()["error"]["code"] == "not_found"


# The pattern as a JSON Schema validator reads it (Schemathesis' own), not as Python's re.
crop_schema = jsonschema_rs.validator_for({"type": "string", "pattern": CROP_PATTERN})


@given(st.one_of(st.from_regex(CROP_PATTERN), st.text(st.sampled_from("0123456789, x\t\n\u0661"), max_size=24)))
def test_the_crop_pattern_accepts_what_the_options_accept(value):
    try:
        JobOptions(crop=value)
        valid = True
    except ValidationError:
        valid = False
    # An empty crop is no crop (a form sends it when the field is left blank).
    assert valid == (crop_schema.is_valid(value) or value == ""), value
