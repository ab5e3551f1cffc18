"""Generated requests from the OpenAPI spec never get a 500 and match the declared schemas."""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi import checks

from api.app import create_app
from flows.settings import ApiSettings
from tests.api.conftest import AUTH

# The spec depends only on the routes, so an app that never connects anywhere describes it.
_SPEC_APP = create_app(ApiSettings(database_url="postgresql://spec@127.0.0.1:1/spec",
                                   queue_url="http://127.0.0.1:1/spec", api_keys="spec"))
schema = schemathesis.openapi.from_dict(_SPEC_APP.openapi())


@schema.parametrize()
@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
def test_generated_requests(case, client, flow):
    # Positive-data acceptance is left out: what the schema cannot express (opaque cursors,
    # unique step ids, JMESPath that compiles) is rightly refused with a 4xx.
    case.call_and_validate(headers=AUTH, app=client.app,
                           excluded_checks=[checks.positive_data_acceptance])
