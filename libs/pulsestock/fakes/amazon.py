"""Amazon SP-API Listings Items (2021-08-01) `patchListingsItem` with
`fulfillment_availability`, `getListingsItem`, and the Login with Amazon token endpoint."""

from __future__ import annotations

import json
import secrets
import time
import uuid
from typing import Any

from aiohttp import web
from pulsestock.fakes.base import FakeChannel, RecordedRequest, TokenBucket

LISTINGS_PATH = "/listings/2021-08-01/items/{seller_id}/{sku}"
TOKEN_PATH = "/auth/o2/token"


class FakeAmazon(FakeChannel):
    name = "amazon"

    def __init__(
        self,
        client_id: str = "amzn1.application-oa2-client.fake",
        client_secret: str = "fake-lwa-secret",
        refresh_token: str = "Atzr|fake-refresh",
        seller_id: str = "A1FAKESELLER",
        marketplace_id: str = "ATVPDKIKX0DER",
        rate_per_second: float = 5.0,
        burst: float = 5.0,
        token_lifetime_s: int = 3600,
    ) -> None:
        super().__init__()
        self.client_id, self.client_secret, self.refresh_token = (
            client_id,
            client_secret,
            refresh_token,
        )
        self.seller_id, self.marketplace_id = seller_id, marketplace_id
        self.limit = TokenBucket(rate_per_second, burst)
        self.token_lifetime_s = token_lifetime_s
        self.tokens: dict[str, float] = {}  # access token -> expiry (monotonic)
        self.quantities: dict[str, int] = {}  # by seller SKU

    def quantity_of(self, sku: str) -> int | None:
        return self.quantities.get(sku)

    def set_quantity_outside(self, sku: str, quantity: int) -> None:
        self.quantities[sku] = quantity

    def is_write(self, request: RecordedRequest) -> bool:
        return request.method == "PATCH"

    def routes(self, app: web.Application) -> None:
        app.router.add_post(TOKEN_PATH, self.token)
        app.router.add_patch(LISTINGS_PATH, self.patch)
        app.router.add_get(LISTINGS_PATH, self.get)

    def throttled(self, retry_after: float) -> web.Response:
        return _errors(429, "QuotaExceeded", "You exceeded your quota for the requested resource.")

    async def token(self, request: web.Request) -> web.Response:
        form = await request.post()
        if (
            form.get("grant_type") != "refresh_token"
            or form.get("refresh_token") != self.refresh_token
            or form.get("client_id") != self.client_id
            or form.get("client_secret") != self.client_secret
        ):
            return web.json_response(
                {
                    "error": "invalid_grant",
                    "error_description": "The request has an invalid grant parameter",
                },
                status=400,
            )
        access_token = f"Atza|{secrets.token_urlsafe(24)}"
        self.tokens[access_token] = time.monotonic() + self.token_lifetime_s
        return web.json_response(
            {
                "access_token": access_token,
                "refresh_token": self.refresh_token,
                "token_type": "bearer",
                "expires_in": self.token_lifetime_s,
            }
        )

    def _refuse(self, request: web.Request) -> web.Response | None:
        token = request.headers.get("x-amz-access-token", "")
        if self.tokens.get(token, 0.0) < time.monotonic():
            return _errors(403, "Unauthorized", "Access to requested resource is denied.")
        if request.match_info["seller_id"] != self.seller_id:
            return _errors(403, "Unauthorized", "Access to requested resource is denied.")
        if request.query.get("marketplaceIds") != self.marketplace_id:
            return _errors(400, "InvalidInput", "marketplaceIds is required")
        if not self.limit.take():
            return _errors(
                429, "QuotaExceeded", "You exceeded your quota for the requested resource."
            )
        return None

    async def patch(self, request: web.Request) -> web.Response:
        if (refusal := self._refuse(request)) is not None:
            return refusal
        sku = request.match_info["sku"]
        try:
            body = json.loads(await request.read())
            quantity = None
            for patch in body["patches"]:
                if patch["op"] not in ("add", "replace", "merge", "delete"):
                    raise ValueError(patch["op"])
                if patch["path"] == "/attributes/fulfillment_availability":
                    for offer in patch["value"]:
                        if offer["fulfillment_channel_code"] == "DEFAULT":
                            quantity = int(offer["quantity"])
            _ = body["productType"]
        except (KeyError, TypeError, ValueError, json.JSONDecodeError):
            return _errors(400, "InvalidInput", "Request body is invalid")
        submission = uuid.uuid4().hex
        if quantity is None or quantity < 0:
            return web.json_response(
                {
                    "sku": sku,
                    "status": "INVALID",
                    "submissionId": submission,
                    "issues": [
                        {"code": "90220", "message": "quantity is required", "severity": "ERROR"}
                    ],
                }
            )
        self.quantities[sku] = quantity
        return web.json_response(
            {"sku": sku, "status": "ACCEPTED", "submissionId": submission, "issues": []}
        )

    async def get(self, request: web.Request) -> web.Response:
        if (refusal := self._refuse(request)) is not None:
            return refusal
        sku = request.match_info["sku"]
        if sku not in self.quantities:
            return _errors(404, "NotFound", f"SKU {sku} not found")
        body: dict[str, Any] = {"sku": sku}
        if "fulfillmentAvailability" in request.query.get("includedData", ""):
            body["fulfillmentAvailability"] = [
                {"fulfillmentChannelCode": "DEFAULT", "quantity": self.quantities[sku]}
            ]
        return web.json_response(body)


def _errors(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"errors": [{"code": code, "message": message}]}, status=status)
