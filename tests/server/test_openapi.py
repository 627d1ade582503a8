"""The OpenAPI document is complete and true: every route with its body, its
answers and every error status it can give, and each real answer fits its
documented schema (tests/fuzz runs Schemathesis over the same document)."""

from __future__ import annotations

from typing import Any

import httpx
import jsonschema
import pytest
from starlette.routing import Route

from cuemsg.server import wire
from cuemsg.server.app import create_app
from cuemsg.server.settings import ServerSettings
from cuemsg.server.storage.base import CueRow
from cuemsg.testing import RunningServer
from tests.server.conftest import Api, error_of


def _served(extensions: bool) -> set[tuple[str, str]]:
    app = create_app(ServerSettings(db=":memory:", extensions=extensions))
    pairs = set()
    for route in app.routes:
        if getattr(route, "path", "").startswith("/console"):
            continue  # the web console's files: pages for a browser, not API routes
        assert isinstance(route, Route)
        for method in route.methods or ():
            if method != "HEAD":
                pairs.add((route.path, method.lower()))
    return pairs


def _doc(srv: RunningServer) -> dict[str, Any]:
    return dict(httpx.get(f"{srv.base_url}/openapi.json").json())


def test_openapi_paths_match_the_routes(srv: RunningServer) -> None:
    doc = _doc(srv)
    documented = {(path, m) for path, ops in doc["paths"].items() for m in ops}
    assert documented == _served(extensions=True)
    for path, ops in doc["paths"].items():
        for op in ops.values():
            ref = op.get("requestBody", {}).get("content", {}).get("application/json", {})
            if ref:
                name = ref["schema"]["$ref"].rsplit("/", 1)[1]
                assert name in doc["components"]["schemas"], (path, name)


def test_plain_mode_documents_no_extension_route() -> None:
    from cuemsg.server.openapi import openapi_document

    doc = openapi_document(frozenset(), metrics=True)  # an app serves /metrics by default
    documented = {(path, m) for path, ops in doc["paths"].items() for m in ops}
    assert documented == _served(extensions=False)
    assert "/v1/fire" not in doc["paths"]


def test_fire_schema_names_its_fields(srv: RunningServer) -> None:
    schemas = _doc(srv)["components"]["schemas"]
    fire = schemas["FireBody"]
    assert set(fire["properties"]) == {
        "payload_override",
        "merge_strategy",
        "send_at",
        "idempotency_key",
    }
    assert fire.get("additionalProperties") is False
    send_at = fire["properties"]["send_at"]["anyOf"][0]
    assert send_at == {"type": "string", "format": "date-time"}


def test_every_operation_documents_its_answers_and_errors(srv: RunningServer) -> None:
    doc = _doc(srv)
    error_ref = {"$ref": "#/components/schemas/ErrorBody"}
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            where = f"{method.upper()} {path}"
            responses = op["responses"]
            success = [s for s in responses if s.startswith("2")]
            assert len(success) == 1, where
            if success != ["204"]:
                # JSON, or text for the event stream and /metrics
                [body] = responses[success[0]]["content"].values()
                assert body["schema"], where
            if op["security"]:
                assert {"401", "429", "503"} <= set(responses), where
                assert "Retry-After" in responses["429"]["headers"], where
            if method != "get":
                assert {"503", "507"} <= set(responses), where
                assert "Retry-After" in responses["507"]["headers"], where
            if "requestBody" in op:
                assert {"413", "422"} <= set(responses), where
            if "{" in path:
                assert "404" in responses, where
            for status, answer in responses.items():
                if not status.startswith("2"):
                    assert answer["content"]["application/json"]["schema"] == error_ref, where
    register = doc["paths"]["/v1/auth/register"]["post"]
    assert set(register["responses"]) == {"201", "403", "413", "421", "422", "429", "503", "507"}
    assert register["security"] == []
    assert register["requestBody"]["required"] is True
    # An absent fire body is `{}`: every field is optional.
    assert doc["paths"]["/v1/cues/{cue_id}/fire"]["post"]["requestBody"]["required"] is False
    claim = doc["paths"]["/v1/executions/{execution_id}/claim"]["post"]
    assert claim["requestBody"]["required"] is True
    assert {"ClaimExecution", "RecordOutcome", "GetExecution"} <= set(
        doc["paths"]["/v1/cues/{cue_id}/fire"]["post"]["responses"]["200"]["links"]
    )


def test_query_parameters_are_typed_and_bounded(srv: RunningServer) -> None:
    doc = _doc(srv)
    params = {p["name"]: p for p in doc["paths"]["/v1/executions"]["get"]["parameters"]}
    assert params["limit"]["schema"] == {
        "type": "integer",
        "minimum": 1,
        "maximum": 1000,
        "default": 50,
    }
    assert "delivering" in params["status"]["schema"]["enum"]
    heartbeat = doc["paths"]["/v1/executions/{execution_id}/heartbeat"]["post"]
    assert {(p["name"], p["in"]) for p in heartbeat["parameters"]} == {
        ("execution_id", "path"),
        ("X-Worker-Id", "header"),
    }


def test_schedule_is_a_tagged_union_and_callback_is_typed(srv: RunningServer) -> None:
    schemas = _doc(srv)["components"]["schemas"]
    schedule = schemas["CueCreate"]["properties"]["schedule"]["anyOf"][0]
    assert schedule["discriminator"]["mapping"] == {
        "once": "#/components/schemas/ScheduleOnce",
        "recurring": "#/components/schemas/ScheduleRecurring",
    }
    assert schemas["ScheduleOnce"]["properties"]["at"]["format"] == "date-time"
    recurring = schemas["ScheduleRecurring"]["properties"]
    assert recurring["cron"]["format"] == "cron"
    assert "Europe/Paris" in recurring["timezone"]["enum"]
    assert schemas["Callback"]["required"] == ["url"]


class Checker:
    """Validates answers against the document the server serves."""

    def __init__(self, doc: dict[str, Any]) -> None:
        self.doc = doc

    def __call__(self, answer: httpx.Response, path: str, method: str = "get") -> Any:
        op = self.doc["paths"][path][method]
        documented = op["responses"].get(str(answer.status_code))
        assert documented is not None, (path, method, answer.status_code, answer.text)
        content = documented.get("content")
        if content is None:
            assert answer.content == b""
            return None
        schema = {**content["application/json"]["schema"], "components": self.doc["components"]}
        body = answer.json()
        jsonschema.validate(body, schema, cls=jsonschema.Draft202012Validator)
        return body


def test_real_answers_fit_their_schemas(srv: RunningServer, api: Api) -> None:
    check = Checker(_doc(srv))
    http = api.http
    made = check(
        http.post("/v1/cues", json={"name": "s", "transport": "worker", "payload": {"task": "t"}}),
        "/v1/cues",
        "post",
    )
    cue_id = made["id"]
    hook = http.post(
        "/v1/cues",
        json={
            "name": "hook",
            "callback": {"url": "https://x.test/h"},
            "schedule": {"type": "recurring", "cron": "0 0 1 1 *"},
        },
    )
    assert check(hook, "/v1/cues", "post")["callback"]["url"] == "https://x.test/h"
    check(http.post("/v1/cues", json={"name": "s", "transport": "worker"}), "/v1/cues", "post")
    check(http.get("/v1/cues"), "/v1/cues")
    check(http.get(f"/v1/cues/{cue_id}"), "/v1/cues/{cue_id}")
    check(http.get("/v1/cues/cue_nonexistent0"), "/v1/cues/{cue_id}")
    check(http.patch(f"/v1/cues/{cue_id}", json={"status": "paused"}), "/v1/cues/{cue_id}", "patch")
    fired = check(http.post(f"/v1/cues/{cue_id}/fire", json={}), "/v1/cues/{cue_id}/fire", "post")
    check(http.post("/v1/fire", json={"fires": [{"cue_id": cue_id}] * 3}), "/v1/fire", "post")
    check(http.get("/v1/executions/claimable"), "/v1/executions/claimable")
    claimed = check(
        http.post(f"/v1/executions/{fired['id']}/claim", json={"worker_id": "w"}),
        "/v1/executions/{execution_id}/claim",
        "post",
    )
    assert claimed["attempts"] == 1
    check(
        http.post(f"/v1/executions/{fired['id']}/claim", json={"worker_id": "w"}),
        "/v1/executions/{execution_id}/claim",
        "post",
    )
    beat = f"/v1/executions/{fired['id']}/heartbeat"
    check(
        http.post(beat, headers={"X-Worker-Id": "w"}),
        "/v1/executions/{execution_id}/heartbeat",
        "post",
    )
    check(
        http.post(beat, headers={"X-Worker-Id": "x"}),
        "/v1/executions/{execution_id}/heartbeat",
        "post",
    )
    check(
        http.post(f"/v1/executions/{fired['id']}/outcome", json={"success": True}),
        "/v1/executions/{execution_id}/outcome",
        "post",
    )
    one = check(
        http.post("/v1/executions/claim", json={"worker_id": "w"}), "/v1/executions/claim", "post"
    )
    many = check(
        http.post("/v1/executions/claim", json={"worker_id": "w", "limit": 5}),
        "/v1/executions/claim",
        "post",
    )
    assert len(many["executions"]) == 2
    check(
        http.post("/v1/executions/claim", json={"worker_id": "w"}), "/v1/executions/claim", "post"
    )
    batch = check(
        http.post(
            "/v1/executions/outcomes",
            json={
                "outcomes": [
                    {"execution_id": one["execution_id"], "success": False, "error": "no"},
                    {"execution_id": "nope", "success": True},
                ]
            },
        ),
        "/v1/executions/outcomes",
        "post",
    )
    assert "error" in batch["results"][1]
    check(http.get("/v1/executions"), "/v1/executions")
    check(http.get(f"/v1/executions/{fired['id']}"), "/v1/executions/{execution_id}")
    check(
        http.post("/v1/worker/heartbeat", json={"worker_id": "w", "handlers": ["t"]}),
        "/v1/worker/heartbeat",
        "post",
    )
    check(http.get("/v1/workers"), "/v1/workers")
    check(http.delete(f"/v1/cues/{cue_id}"), "/v1/cues/{cue_id}", "delete")
    check(httpx.get(f"{srv.base_url}/v1/info"), "/v1/info")
    check(httpx.get(f"{srv.base_url}/health"), "/health")
    check(
        httpx.post(f"{srv.base_url}/v1/auth/register", json={"email": "a@b.c"}),
        "/v1/auth/register",
        "post",
    )
    check(httpx.get(f"{srv.base_url}/v1/cues"), "/v1/cues")  # 401


# -- defects the document and the fuzzer found ---------------------------------


def test_wrong_method_names_the_allowed_ones(api: Api) -> None:
    answer = api.http.delete("/v1/cues")
    error_of(answer, 405, "method_not_allowed")
    assert answer.headers["allow"] == "GET, HEAD, POST"
    # /v1/executions/claim is also matched by /v1/executions/{execution_id}: the
    # route Starlette tried first decides, and it has only POST.
    answer = api.http.request("OPTIONS", "/v1/executions/claim")
    error_of(answer, 405, "method_not_allowed")
    assert answer.headers["allow"] == "POST"


def test_an_integral_float_is_an_integer(api: Api) -> None:
    cue = api.cue(retry={"max_attempts": 2.0, "backoff_minutes": [1.0, 5]})
    assert cue["retry"] == {"max_attempts": 2, "backoff_minutes": [1, 5]}
    for _ in range(3):
        api.fire(cue["id"])
    many = api.claim(limit=2.0)
    assert many.status_code == 200, many.text
    assert len(many.json()["executions"]) == 2
    assert error_of(api.claim(limit=1.5), 422, "validation_error")["field"] == "limit"
    assert error_of(api.claim(limit="1"), 422, "validation_error")["field"] == "limit"


def test_a_blank_body_is_not_json(api: Api) -> None:
    cue = api.cue()
    answer = api.http.patch(f"/v1/cues/{cue['id']}", content=b"\x0c \n")
    error_of(answer, 422, "validation_error")
    # No body at all is still `{}` (every fire field is optional).
    assert api.http.post(f"/v1/cues/{cue['id']}/fire").status_code == 200


def test_nul_is_stored_where_the_backend_can_hold_it(api: Api, backend: str) -> None:
    # The fuzz run leaves NUL out of its data (tests/fuzz/hooks.py): this is why.
    cue = api.cue()
    payload = {"deep": [{"k\x00": "v\x00"}]}
    answer = api.http.post(f"/v1/cues/{cue['id']}/fire", json={"payload_override": payload})
    if backend == "postgres":  # PostgreSQL text and jsonb cannot hold NUL
        assert "value not storable" in error_of(answer, 422, "validation_error")["message"]
        assert api.http.get("/v1/executions").json()["executions"] == []
    else:
        assert answer.status_code == 200, answer.text
        assert api.execution(answer.json()["id"])["payload"]["deep"] == payload["deep"]


def test_cue_status_filter_is_checked(api: Api) -> None:
    assert (
        error_of(api.http.get("/v1/cues?status=gone"), 422, "validation_error")["field"] == "status"
    )


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"send_at": "9999-12-31T23:59:59-23:59"}, "send_at"),
        ({"send_at": "0001-01-01T00:00:00+23:59"}, "send_at"),
    ],
)
def test_a_time_that_cannot_be_shown_in_utc_is_refused(
    api: Api, body: dict[str, Any], field: str
) -> None:
    cue = api.cue()
    answer = api.http.post(f"/v1/cues/{cue['id']}/fire", json=body)
    assert error_of(answer, 422, "validation_error")["field"] == field
    assert api.http.get("/v1/executions").status_code == 200


def test_a_once_schedule_out_of_range_is_refused(api: Api) -> None:
    answer = api.http.post(
        "/v1/cues",
        json={
            "name": "x",
            "transport": "worker",
            "schedule": {"type": "once", "at": "0001-01-01T00:00:00+23:59"},
        },
    )
    assert error_of(answer, 422, "validation_error")["field"] == "schedule.at"
    assert api.http.get("/v1/cues").json()["cues"] == []


def test_a_stored_shape_the_answer_no_longer_has_still_renders() -> None:
    # Rows written by an older version may hold a callback without `url`:
    # the cue still renders (callback null) rather than failing a listing.
    row = CueRow(
        id="cue_aaaaaaaaaaaa",
        tenant_id="t",
        name="old",
        callback={"note": "no url"},
        schedule={"type": "once", "at": "2030-01-01T00:00:00+00:00"},
        retry={"max_attempts": 3, "backoff_minutes": [1]},
    )
    answer = wire.cue_answer(row)
    assert answer.callback is None
    assert answer.schedule is not None


@pytest.mark.parametrize("url", ["ftp://x.test/h", "http://[::1", "https://x.test/a b", "https://"])
def test_a_callback_url_must_be_one(api: Api, url: str) -> None:
    answer = api.http.post("/v1/cues", json={"name": "hook", "callback": {"url": url}})
    assert error_of(answer, 422, "validation_error")["field"] == "callback.url"


def test_a_callback_url_keeps_its_path_and_query(api: Api) -> None:
    url = "https://hooks.example.com:8443/in/cuemsg?token=abc#frag"
    answer = api.http.post("/v1/cues", json={"name": "hook", "callback": {"url": url}})
    assert answer.status_code == 201, answer.text
    assert answer.json()["callback"] == {"url": url}


def test_patterns_read_alike_in_json_schema_and_python(srv: RunningServer, api: Api) -> None:
    # Python's `$` also matches before a final newline, and its `\s` is not
    # JSON Schema's: the fuzzer found both. A trailing newline is refused...
    answer = httpx.post(f"{srv.base_url}/v1/auth/register", json={"email": "a@b.c\n"})
    assert error_of(answer, 422, "validation_error")["field"] == "email"
    cron = {"type": "recurring", "cron": "0 0 1 1 *\n"}
    answer = api.http.post("/v1/cues", json={"name": "c", "transport": "worker", "schedule": cron})
    assert error_of(answer, 422, "validation_error")["field"] == "schedule.cron"
    # ...and a character JSON Schema does not call space is not one here either.
    answer = httpx.post(f"{srv.base_url}/v1/auth/register", json={"email": "a\x1cb@c.d"})
    assert answer.status_code == 201, answer.text


@pytest.mark.parametrize("url", ["http://[:::]/x", "https://[1::2::3]:8443/"])
def test_a_bracketed_host_that_is_no_ipv6_address_is_refused(api: Api, url: str) -> None:
    # It fits the pattern, and is a 422: not a 500, nor a cue that fails every delivery.
    # Python 3.11's URL parser refuses it; 3.10's does not, so the server checks
    # the brackets itself (`make compat` runs this on 3.10).
    answer = api.http.post("/v1/cues", json={"name": "h", "callback": {"url": url}})
    error = error_of(answer, 422, "validation_error")
    assert error["field"] == "callback.url"
    assert "not a valid URL" in error["message"]
