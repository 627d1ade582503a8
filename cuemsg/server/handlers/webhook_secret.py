"""`/v1/auth/webhook-secret`: the tenant's webhook signing secret, and
`/regenerate` (which needs `X-Confirm-Destructive: true`, as on the hosted
service: every receiver holding the old secret stops verifying)."""

from __future__ import annotations

from starlette.responses import Response

from cuemsg.server.answers import WebhookSecret
from cuemsg.server.errors import ApiProblem
from cuemsg.server.responses import ok
from cuemsg.server.state import Ctx
from cuemsg.server.webhooks import new_webhook_secret, tenant_secret


async def get_webhook_secret(ctx: Ctx) -> Response:
    return ok(WebhookSecret(webhook_secret=await tenant_secret(ctx.server.storage, ctx.tenant_id)))


async def regenerate_webhook_secret(ctx: Ctx) -> Response:
    if ctx.request.headers.get("x-confirm-destructive", "").strip().lower() != "true":
        raise ApiProblem(
            400,
            "confirmation_required",
            "regenerating the webhook secret invalidates the current one: "
            "send the header 'X-Confirm-Destructive: true'",
        )
    secret = await ctx.server.storage.webhook_secret(
        ctx.tenant_id, new_webhook_secret(), replace=True
    )
    return ok(WebhookSecret(webhook_secret=secret))
