"""The OpenAPI 3.1 document, generated from the route tables (`ROUTES`,
`OPEN_ROUTES`) and the msgspec Structs the server decodes (`wire`) and encodes
(`answers`), so it always matches what is served: request bodies, success
answers, every error status a route can give, query and header parameters, and
the links a client (or Schemathesis' stateful run) follows from one answer to
the next operation.
"""

from __future__ import annotations

from typing import Any

import msgspec

from cuemsg.server.answers import Callback, ErrorBody
from cuemsg.server.routes import OPEN_ROUTES, ROUTES, Endpoint

_REF = "#/components/schemas/{name}"

_ERRORS = {
    400: "A required confirmation header is missing (`confirmation_required`)",
    401: "No API key, or one that is not valid (`invalid_api_key`)",
    403: "The lease belongs to another worker (`not_execution_owner`); registration "
    "is closed (`registration_closed`)",
    404: "No such cue or execution for this key (`cue_not_found`, `execution_not_found`)",
    409: "A conflict with the current state: `claim_failed`, `cue_name_taken`, "
    "`execution_not_claiming`, `outcome_already_recorded`, `idempotency_key_conflict`",
    413: "The request body is over the size limit (`payload_too_large`)",
    421: "A loopback-bound server asked for another host (`misdirected_request`)",
    422: "A field is missing or not valid (`validation_error`; `error.field` names it)",
    429: "Over a rate limit (`rate_limited`) or the tenant's unsettled executions "
    "(`quota_exceeded`); retry after `Retry-After` seconds",
    503: "The storage is unavailable (`storage_unavailable`); retry after `Retry-After`",
    507: "The storage is full (`storage_full`) or the tenant's stored bytes are "
    "(`quota_exceeded`): nothing more is written, reads still work",
}
_RETRY_AFTER = {"Retry-After": {"description": "seconds", "schema": {"type": "integer"}}}

_EXECUTION = "$response.body#/id"
_CLAIMED = "$response.body#/execution_id"
_AS_CLAIMER = "$request.body#/worker_id"

# operationId -> {link name: (target operationId, parameters)}: the steps of the
# contract's life cycle (create -> fire -> claim -> heartbeat -> outcome). Only
# from answers that always hold the value: not from a listing (it may be empty)
# nor from claim-next (with `limit` its answer is a list).
_LINKS: dict[str, dict[str, tuple[str, dict[str, str]]]] = {
    "create_cue": {
        "GetCue": ("get_cue", {"path.cue_id": "$response.body#/id"}),
        "FireCue": ("fire", {"path.cue_id": "$response.body#/id"}),
        "PatchCue": ("patch_cue", {"path.cue_id": "$response.body#/id"}),
        "DeleteCue": ("delete_cue", {"path.cue_id": "$response.body#/id"}),
        "ListItsExecutions": ("list_executions", {"query.cue_id": "$response.body#/id"}),
    },
    "get_cue": {"FireCue": ("fire", {"path.cue_id": "$response.body#/id"})},
    "fire": {
        "GetExecution": ("get_execution", {"path.execution_id": _EXECUTION}),
        "ClaimExecution": ("claim", {"path.execution_id": _EXECUTION}),
        "RecordOutcome": ("outcome", {"path.execution_id": _EXECUTION}),
    },
    "fire_batch": {
        "ClaimFirst": ("claim", {"path.execution_id": "$response.body#/executions/0/id"}),
    },
    "claim": {
        "Heartbeat": (
            "heartbeat",
            {"path.execution_id": _CLAIMED, "header.X-Worker-Id": _AS_CLAIMER},
        ),
        "RecordOutcome": (
            "outcome",
            {"path.execution_id": _CLAIMED, "header.X-Worker-Id": _AS_CLAIMER},
        ),
        "GetExecution": ("get_execution", {"path.execution_id": _CLAIMED}),
    },
    "outcome": {
        "GetExecution": ("get_execution", {"path.execution_id": "$response.body#/execution_id"})
    },
}


def openapi_document(extensions: frozenset[str], *, metrics: bool = False) -> dict[str, Any]:
    """The OpenAPI 3.1 document of the routes served with these extensions (and
    `GET /metrics` when it is served)."""
    from cuemsg import __version__

    served = [e for e in ROUTES + OPEN_ROUTES if e.extension is None or e.extension in extensions]
    served_ops = {e.handler.__name__ for e in served}
    types: set[type[Any]] = {ErrorBody, Callback}
    for e in served:
        if e.body is not None:
            types.add(e.body)
        types.update(_answer_types(e))
    _, components = msgspec.json.schema_components(
        sorted(types, key=lambda t: t.__name__), ref_template=_REF
    )
    if "CueCreate" in components:
        # A webhook cue (the default transport) needs a callback: say so, so that
        # what the schema allows is what the server accepts.
        components["CueCreate"]["anyOf"] = [
            {"required": ["callback"], "properties": {"callback": _ref(Callback)}},
            {"required": ["transport"], "properties": {"transport": {"const": "worker"}}},
        ]
    paths: dict[str, dict[str, Any]] = {}
    for e in served:
        paths.setdefault(e.path, {})[e.method.lower()] = _operation(e, served_ops)
    if "/v1/events" in paths:  # a stream of Server-Sent Events, not one JSON answer
        ok_events = paths["/v1/events"]["get"]["responses"]["200"]
        ok_events["content"] = {"text/event-stream": {"schema": {"type": "string"}}}
    if metrics:
        text = {"text/plain": {"schema": {"type": "string"}}}
        ok_text = {"200": {"description": "Prometheus text format", "content": text}}
        paths["/metrics"] = {
            "get": {"summary": "Prometheus metrics", "security": [], "responses": ok_text}
        }
    return {
        "openapi": "3.1.0",
        "info": {"title": "cuemsg embedded CueAPI server", "version": __version__},
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


def _ref(type_: type[Any]) -> dict[str, str]:
    return {"$ref": _REF.format(name=type_.__name__)}


def _answer_types(e: Endpoint) -> tuple[type[Any], ...]:
    if e.answer is None:
        return ()
    return e.answer if isinstance(e.answer, tuple) else (e.answer,)


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _operation(e: Endpoint, served_ops: set[str]) -> dict[str, Any]:
    name = e.handler.__name__
    op: dict[str, Any] = {
        "summary": e.summary,
        "operationId": name,
        "security": [{"bearer": []}] if e.auth else [],
    }
    params = [
        {"name": p.strip("{}"), "in": "path", "required": True, "schema": {"type": "string"}}
        for p in e.path.split("/")
        if p.startswith("{")
    ]
    params += [
        {"name": p.name, "in": p.where, "required": p.required, "schema": p.schema}
        | ({"description": p.description} if p.description else {})
        for p in e.params
    ]
    if params:
        op["parameters"] = params
    if e.body is not None:
        # Required when the body type has a required field; an absent body is `{}`.
        required = any(f.required for f in msgspec.structs.fields(e.body))
        op["requestBody"] = {"required": required, "content": _json(_ref(e.body))}

    success: dict[str, Any] = {"description": "OK" if e.status != 201 else "Created"}
    answer = _answer_types(e)
    if len(answer) == 1:
        success["content"] = _json(_ref(answer[0]))
    elif answer:
        success["content"] = _json({"anyOf": [_ref(t) for t in answer]})
    elif e.status != 204:
        success["content"] = _json({"type": "object"})
    links = {
        link: {"operationId": target, "parameters": parameters}
        for link, (target, parameters) in _LINKS.get(name, {}).items()
        if target in served_ops
    }
    if links:
        success["links"] = links
    responses: dict[str, Any] = {str(e.status): success}
    statuses = set(e.errors) | {421}  # the Host guard of a loopback-bound server
    if e.auth:
        statuses |= {401, 429}
    if e.body is not None:
        statuses |= {413, 422}
    writes = e.method != "GET"
    if e.auth or writes:  # the key is looked up in storage (guard.py answers its failures)
        statuses.add(503)
    if writes:
        statuses.add(507)
    for status in sorted(statuses):
        answer_doc: dict[str, Any] = {
            "description": _ERRORS[status],
            "content": _json(_ref(ErrorBody)),
        }
        if status in (429, 503, 507):
            answer_doc["headers"] = _RETRY_AFTER
        responses[str(status)] = answer_doc
    op["responses"] = responses
    return op
