"""The OpenAPI description is served, and schemathesis drives the app from it: never a server error."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from schemathesis.specs.openapi.checks import status_code_conformance

from gateway import create_app
from gateway.auth import key_digest
from tests.conftest import close_app

H = {"Authorization": "Bearer sk-schemathesis", "x-portkey-provider": "openai"}


@pytest.fixture(scope="module")
def api_app(fake, tmp_path_factory):
    path = tmp_path_factory.mktemp("openapi") / "store.sqlite3"
    # The callers' key is the admin key too, so that the generated cases reach the admin endpoints' checks.
    admin_key = key_digest(H["Authorization"].removeprefix("Bearer "))
    app = create_app(
        {"providers": {"openai": {"base_url": fake.url}}, "store_url": f"sqlite:///{path}", "admin_key": admin_key}
    )
    yield app
    close_app(app)


@pytest.fixture(scope="module")
def api_schema(api_app):
    return schemathesis.openapi.from_wsgi("/openapi.json", api_app)


def test_openapi_describes_every_endpoint(api_app):
    spec = api_app.test_client().get("/openapi.json").json
    assert set(spec["paths"]) >= {
        "/v1/responses",
        "/v1/responses/{response_id}",
        "/v1/responses/{response_id}/input_items",
        "/v1/responses/{response_id}/cancel",
        "/v1/responses/compact",
        "/v1/responses/input_tokens",
        "/v1/conversations",
        "/v1/conversations/{conversation_id}",
        "/v1/conversations/{conversation_id}/items",
        "/v1/conversations/{conversation_id}/items/{item_id}",
        "/v1/gateway/prompts",
        "/v1/gateway/prompts/{prompt_id}",
        "/healthz",
    }
    create = spec["components"]["schemas"]["CreateResponse"]
    assert create["required"] == ["model"] and create["properties"]["max_output_tokens"]["minimum"] == 1
    items = {p["name"]: p for p in spec["paths"]["/v1/responses/{response_id}/input_items"]["get"]["parameters"]}
    assert items["limit"]["schema"]["maximum"] == 100 and items["order"]["schema"]["enum"] == ["asc", "desc"]


@pytest.mark.slow
def test_api_never_errors_from_its_own_description(api_schema):
    """Every operation, with cases generated from the description (valid and not): never a 5xx of the
    gateway's own making, and only statuses the description lists."""
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 5  # schemathesis leaves out the description's own path
    for operation in operations:

        @given(case=operation.as_strategy())
        @hsettings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
        def check(case):
            if isinstance(case.body, dict) and case.body.get("background"):
                # A queued background stream waits for a consumer, and this in-process app runs none.
                case.body["stream"] = False
            response = case.call(headers={**(case.headers or {}), **H})
            case.validate_response(response, checks=[schemathesis.checks.not_a_server_error, status_code_conformance])

        check()
