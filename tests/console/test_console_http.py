"""The console over HTTP against the real services: pages render their data, outside values
render as text, the approve action needs a session and a CSRF token and creates one purchase
order however often it is sent, a service's error is a message, every answer carries the
security headers, and server-sent events report a reservation within a deadline."""

from __future__ import annotations

import asyncio
import json
import re
import time
from datetime import UTC, datetime, timedelta

import aiohttp
import numpy as np
import pytest
from markupsafe import escape
from pulsestock.console.adapters.peers import PeerAddresses
from pulsestock.console.entrypoints.http import CONTENT_SECURITY_POLICY
from pulsestock.devstack.servers import free_port
from pulsestock.v1 import forecast_pb2 as fpb
from pulsestock.v1 import fulfillment_events_pb2 as fev
from pulsestock.v1 import fulfillment_pb2 as fpo
from pulsestock.v1 import ingest_events_pb2 as iev
from pulsestock.v1 import inventory_sync_pb2 as inv
from pulsestock.v1 import signal_pb2 as spb
from pulsestock.v1.common_pb2 import Channel, OrderLine
from pulsestock.v1.fulfillment_pb2_grpc import FulfillmentServiceStub

from tests.console.conftest import (
    Stack,
    console_settings,
    csrf_of,
    running_console,
    sign_in,
)
from tests.forecast.test_service import order, publish, stamp
from tests.helpers.infra import eventually
from tests.signal.test_rank_heat import video

pytestmark = pytest.mark.slow
HOSTILE = '<script>alert("pwn")</script>'
STEADY = [100, 110, 95, 105, 90, 100, 115, 100, 95, 105, 100, 98]


async def page(client: aiohttp.ClientSession, url: str) -> tuple[int, str, dict[str, str]]:
    async with client.get(url) as response:
        return response.status, await response.text(), dict(response.headers)


def assert_hardened(headers: dict[str, str]) -> None:
    assert headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
    assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
    assert "unsafe-inline" not in headers["Content-Security-Policy"]
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Referrer-Policy"] == "no-referrer"


def no_inline_script_or_style(html: str) -> None:
    assert "<script>" not in html  # only <script src=...> from this origin
    assert " style=" not in html
    assert " on" + "error=" not in html


async def test_now_ranks_skus_with_their_pulses_and_hostile_evidence_as_text(
    stack: Stack, browser: aiohttp.ClientSession
) -> None:
    # A rule named by an operator with markup in it: its name comes back as pulse evidence.
    await stack.signal.SetRules(
        spb.SetRulesRequest(
            sku="HOT-9",
            rules=[
                spb.Rule(
                    name=HOSTILE, metric="view_growth_1h", op=">", threshold=5.0, min_views=5000
                )
            ],
        ),
        timeout=10,
    )
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=4)
    await video(stack.bus, "hot-9-video", "HOT-9", start, [*STEADY, 4000, 9000, 15000])
    await video(stack.bus, "calm-9-video", "CALM-9", start, STEADY)

    async def shown() -> bool:
        _, html, _ = await page(browser, f"{stack.url}/")
        return 'data-testid="active-pulse" data-sku="HOT-9"' in html and 'data-sku="CALM-9"' in html

    await eventually(shown, within=30, what="HOT-9 pulsing and CALM-9 ranked on Now")
    status, html, headers = await page(browser, f"{stack.url}/")
    assert status == 200
    assert_hardened(headers)
    no_inline_script_or_style(html)
    rows = re.findall(r'data-testid="sku-row" data-sku="([^"]+)" data-rank="(\d+)"', html)
    ranked = [sku for sku, _ in rows]
    assert ranked.index("HOT-9") < ranked.index("CALM-9")
    assert [int(rank) for _, rank in rows] == list(range(1, len(rows) + 1))
    assert re.search(r'data-testid="pulse-state" data-state="(detected|peaking|decaying)"', html)
    assert "since onset:" in html
    # The rule's name is shown as the text it is, never as markup.
    assert HOSTILE not in html
    assert str(escape(f"rule:{HOSTILE}")) in html
    assert "detector" in html


async def test_the_sku_page_charts_heat_forecast_stock_channels_and_the_audit_trail(
    stack: Stack, browser: aiohttp.ClientSession
) -> None:
    sku = "GLOW-9"
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=4)
    await video(stack.bus, "glow-9-video", sku, start, [*STEADY, 4000, 9000, 15000])
    for index in range(6):
        at = start + timedelta(minutes=30 * index)
        await publish(stack.bus, "ingest", sku, order(f"glow-{index}", sku, 1 + index, at))
    await stack.inventory.Receive(
        inv.ReceiveRequest(sku=sku, warehouse_id="wh-east", quantity=30, command_id="glow-in"),
        timeout=10,
    )

    async def rendered() -> bool:
        _, html, _ = await page(browser, f"{stack.url}/sku/{sku}")
        return (
            'data-testid="pulse-marker"' in html
            and 'data-testid="stock-on-hand">30<' in html
            and html.count('<span class="sync sync-in-sync">in sync</span>') == 3
        )

    # (inventory-sync reserves the orders too: the channels show what is left.)
    await eventually(rendered, within=30, what="the pulse marker, stock and three channels")
    status, html, headers = await page(browser, f"{stack.url}/sku/{sku}")
    assert status == 200
    assert_hardened(headers)
    no_inline_script_or_style(html)
    assert 'data-testid="forecast-fan"' in html
    assert 'data-testid="forecast-p50"' in html
    assert 'data-testid="actual-orders"' in html
    assert 'data-testid="pulse-state"' in html
    assert html.count('data-testid="channel-stock-row"') == 3
    assert re.search(r'data-testid="audit-entry" data-version="\d+">[^\n]*StockReceived', html)
    assert re.search(r'data-testid="audit-entry" data-version="\d+">[^\n]*StockReserved', html)
    assert 'data-testid="error-message"' not in html  # every service answered
    assert 'data-testid="approve-button"' not in html  # nothing to approve, and signed out


async def test_a_hostile_sku_in_the_address_is_text_and_each_refusal_a_message(
    stack: Stack, browser: aiohttp.ClientSession
) -> None:
    hostile = "<img src=x onerror=alert(1)>"
    status, html, headers = await page(browser, f"{stack.url}/sku/{hostile}")
    assert status == 200
    assert_hardened(headers)
    assert "<img src=x" not in html
    assert 'data-testid="sku-title">&lt;img src=x onerror=alert(1)&gt;<' in html
    # Each service refused the malformed SKU: one message per section, with the field.
    assert html.count('data-testid="error-code">INVALID_ARGUMENT<') >= 4
    assert "<code>sku</code>" in html
    assert "Traceback" not in html


async def recommendation_for(stack: Stack, sku: str) -> fev.ReplenishmentRecommended:
    """Two weeks of ~3 orders an hour, 20 units left, master data: a review recommends."""
    api: FulfillmentServiceStub = stack.fulfillment
    await api.SetWarehouse(
        fpo.SetWarehouseRequest(
            warehouse=fev.WarehouseProfile(warehouse_id="wh-desk", region="us-east", kind="own")
        ),
        timeout=10,
    )
    air = fev.LeadTimeOptionProfile(
        mode="air",
        lead_time_hours=fev.LeadTimeHours(mean=48, sd=6),
        unit_cost=6.0,
        case_pack=10,
        delivers_to=["wh-desk"],
    )
    await api.SetSupplier(
        fpo.SetSupplierRequest(supplier=fev.SupplierProfile(supplier_id="acme", options=[air])),
        timeout=10,
    )
    await api.SetSkuEconomics(
        fpo.SetSkuEconomicsRequest(
            economics=fev.SkuEconomics(
                sku=sku,
                price=25,
                unit_cost=6,
                salvage=2,
                holding_per_unit_day=0.01,
                target_service_level=0.95,
                warehouse_id="wh-desk",
                supplier_ids=["acme"],
            )
        ),
        timeout=10,
    )
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    counts = np.random.default_rng(5).poisson(3.0, 14 * 24)
    counts[-1] = max(counts[-1], 1)
    await stack.inventory.Receive(
        inv.ReceiveRequest(
            sku=sku, warehouse_id="wh-desk", quantity=20 + int(counts.sum()), command_id="seed"
        ),
        timeout=10,
    )
    for index, count in enumerate(counts):
        if count:
            at = now - timedelta(hours=len(counts) + 1 - index)
            await publish(stack.bus, "ingest", sku, order(f"{sku}-{index}", sku, int(count), at))

    async def folded() -> bool:
        reply = await stack.forecast.GetForecast(fpb.GetForecastRequest(sku=sku), timeout=10)
        return bool(reply.forecast.as_of.ToDatetime(tzinfo=UTC) >= now - timedelta(hours=2))

    await eventually(folded, within=60, what="the orders in the forecast")
    plan = await api.ReviewReplenishment(fpo.ReviewReplenishmentRequest(sku=sku), timeout=30)
    recommendation: fev.ReplenishmentRecommended
    (recommendation,) = plan.recommendations
    assert recommendation.quantity > 0
    return recommendation


async def purchase_orders(stack: Stack, sku: str) -> list[str]:
    reply = await stack.fulfillment.ListPurchaseOrders(
        fpo.ListPurchaseOrdersRequest(sku=sku), timeout=10
    )
    return [po.purchase_order_id for po in reply.purchase_orders]


async def test_approve_needs_a_session_and_its_csrf_token_and_a_double_click_makes_one_po(
    stack: Stack, browser: aiohttp.ClientSession
) -> None:
    sku = "DESK-9"
    recommendation = await recommendation_for(stack, sku)
    sku_url = f"{stack.url}/sku/{sku}"
    approve_url = f"{sku_url}/approve"
    form = {"recommendation_id": recommendation.recommendation_id}

    # Signed out: the page offers no button, and a POST with the page's token is refused.
    status, html, _ = await page(browser, sku_url)
    assert status == 200
    assert f'data-recommendation-id="{recommendation.recommendation_id}"' in html
    assert 'data-testid="approve-signed-out"' in html
    assert 'data-testid="approve-button"' not in html
    # Its reasons: every option with its window, demand, lost margin vs leftover cost.
    assert 'data-testid="chosen-option"' in html
    assert "Expected lost margin" in html
    assert "Expected leftover cost" in html
    csrf = await csrf_of(browser, sku_url)
    async with browser.post(approve_url, data={**form, "csrf": csrf}) as response:
        assert response.status == 403
        assert 'data-testid="error-message"' in await response.text()
        assert_hardened(dict(response.headers))

    # Signed in: without the token, or with another session's, refused too.
    assert await sign_in(browser, stack.url, token="not-the-token-0123456789") == 403
    assert await sign_in(browser, stack.url) == 303
    async with browser.post(approve_url, data=form) as response:
        assert response.status == 403
    async with browser.post(approve_url, data={**form, "csrf": csrf}) as response:
        assert response.status == 403  # the signed-out session's token: not this one's
    assert await purchase_orders(stack, sku) == []

    # A double click: two POSTs at once, one purchase order.
    status, html, _ = await page(browser, sku_url)
    assert 'data-testid="approve-button"' in html
    csrf = await csrf_of(browser, sku_url)

    async def click() -> tuple[int, str]:
        async with browser.post(
            approve_url, data={**form, "csrf": csrf}, allow_redirects=False
        ) as response:
            return response.status, response.headers.get("Location", "")

    first, second = await asyncio.gather(click(), click())
    assert first[0] == second[0] == 303
    assert first[1] == second[1]
    created = await purchase_orders(stack, sku)
    assert len(created) == 1
    assert first[1].endswith(f"?approved={created[0]}")
    status, html, _ = await page(browser, f"{stack.url}{first[1]}")
    assert status == 200
    assert f"Purchase order {created[0]} created" in html
    assert f'data-testid="purchase-order" data-po-id="{created[0]}" data-status="draft"' in html
    # Once more later: still the same one.
    async with browser.post(approve_url, data={**form, "csrf": csrf}) as response:
        assert response.status == 200  # followed to the page
    assert await purchase_orders(stack, sku) == created

    # A refusal is a message naming the service and its status, never a traceback.
    async with browser.post(
        approve_url, data={"recommendation_id": "no-such-recommendation", "csrf": csrf}
    ) as response:
        text = await response.text()
        assert response.status == 404
    assert 'data-testid="error-code">NOT_FOUND<' in text
    assert "<strong>fulfillment</strong>" in text
    assert "Traceback" not in text


async def test_signing_out_ends_the_session(stack: Stack, browser: aiohttp.ClientSession) -> None:
    assert await sign_in(browser, stack.url) == 303
    _, html, _ = await page(browser, f"{stack.url}/")
    assert 'data-testid="sign-out"' in html
    csrf = await csrf_of(browser, f"{stack.url}/")
    async with browser.post(f"{stack.url}/signout", data={}) as response:
        assert response.status == 403  # without its token
    async with browser.post(f"{stack.url}/signout", data={"csrf": csrf}) as response:
        assert response.status == 200
        assert 'data-testid="sign-in-link"' in await response.text()
    cookies = [c for c in browser.cookie_jar if c.key == "pulsestock_console"]
    assert cookies
    assert cookies[0]["httponly"]
    assert cookies[0]["samesite"] == "Lax"  # a link from chat keeps the session


async def test_server_sent_events_report_a_reservation_within_a_second(
    stack: Stack, browser: aiohttp.ClientSession
) -> None:
    sku = "SSE-9"
    await stack.inventory.Receive(
        inv.ReceiveRequest(sku=sku, warehouse_id="wh-sse", quantity=5, command_id="sse-in"),
        timeout=10,
    )
    async with browser.get(
        f"{stack.url}/events", timeout=aiohttp.ClientTimeout(total=30)
    ) as stream:
        assert stream.status == 200
        assert stream.headers["Content-Type"].startswith("text/event-stream")
        assert (await stream.content.readline()).startswith(b"retry:")
        reserved_at = time.monotonic()
        await stack.inventory.Reserve(
            inv.ReserveRequest(
                channel=Channel.CHANNEL_SHOPIFY,
                channel_order_id="sse-order",
                lines=[OrderLine(sku=sku, quantity=2)],
                paid=True,
            ),
            timeout=10,
        )

        async def reservation_seen() -> float:
            while True:
                line = await stream.content.readline()
                if not line.startswith(b"data: "):
                    continue
                events = json.loads(line[len(b"data: ") :])["events"]
                if any(e["kind"] == "stock" and e["sku"] == sku for e in events):
                    return time.monotonic() - reserved_at

        elapsed = await asyncio.wait_for(reservation_seen(), timeout=10)
    assert elapsed < 1.0, f"the reservation reached the page's stream after {elapsed:.2f} s"


async def test_channels_and_live_pages(stack: Stack, browser: aiohttp.ClientSession) -> None:
    await stack.inventory.Receive(
        inv.ReceiveRequest(sku="CHAN-9", warehouse_id="wh-c", quantity=7, command_id="chan-in"),
        timeout=10,
    )
    now = datetime.now(UTC).replace(microsecond=0)
    for minute, (viewers, interactions, orders) in enumerate([(500, 100, 2), (1500, 400, 12)]):
        sample = iev.LiveSampled(
            live_id="LIVE-9",
            skus=["CHAN-9"],
            observed_at=stamp(now - timedelta(minutes=3 - minute)),
            concurrent_viewers=viewers,
            interactions=interactions,
            orders_so_far=orders,
        )
        await publish(stack.bus, "ingest", "LIVE-9", sample)

    async def channels_in_sync() -> bool:
        _, html, _ = await page(browser, f"{stack.url}/channels")
        return html.count('data-testid="channel-state">in sync<') == 3

    await eventually(channels_in_sync, within=30, what="three channels in sync")
    status, html, headers = await page(browser, f"{stack.url}/channels")
    assert status == 200
    assert_hardened(headers)
    for name in ("TikTok Shop", "Shopify", "Amazon"):
        assert f'data-testid="channel-row" data-channel="{name}"' in html
    assert "allowed" in html  # calls against the rate limit

    async def live_listed() -> bool:
        _, html, _ = await page(browser, f"{stack.url}/live")
        return 'data-live-id="LIVE-9"' in html and 'data-testid="live-orders"' in html

    await eventually(live_listed, within=30, what="the live session on Live")
    status, html, headers = await page(browser, f"{stack.url}/live/LIVE-9")
    assert status == 200
    assert_hardened(headers)
    assert 'data-testid="live-chart"' in html
    assert 'data-testid="live-orders-so-far">12<' in html
    assert html.count('<tr><td class="num">') == 2  # two minutes
    status, html, _ = await page(browser, f"{stack.url}/live/NO-SUCH-LIVE")
    assert 'data-testid="error-code">NOT_FOUND<' in html


async def test_services_down_are_messages_on_every_page(browser: aiohttp.ClientSession) -> None:
    nowhere = f"127.0.0.1:{free_port()}"
    settings = console_settings(
        PeerAddresses(nowhere, nowhere, nowhere, nowhere), None, call_timeout_s=1.0
    )
    async with running_console(settings) as url:
        for path in ("/", "/sku/ANY-1", "/channels", "/live"):
            status, html, headers = await page(browser, f"{url}{path}")
            assert status == 200, path
            assert_hardened(headers)
            assert 'data-testid="error-code">UNAVAILABLE<' in html, path
            assert "Traceback" not in html
        async with browser.get(f"{url}/static/console.css") as response:
            assert response.status == 200
            assert_hardened(dict(response.headers))
        # Signing in is refused when no token is configured.
    async with running_console(
        console_settings(PeerAddresses(nowhere, nowhere, nowhere, nowhere), None, token=None)
    ) as url:
        assert await sign_in(browser, url) == 403


async def test_now_renders_a_thousand_skus_well_under_a_second(
    stack: Stack, browser: aiohttp.ClientSession
) -> None:
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)
    registrations, samples = [], []
    for index in range(1000):
        sku, video_id = f"BULK-{index:04d}", f"bulk-video-{index:04d}"
        registrations.append(
            (
                sku,
                iev.VideoRegistered(
                    video_id=video_id,
                    skus=[sku],
                    creator_id="bulk",
                    creator_followers=1000 + index,
                    published_at=stamp(start - timedelta(hours=1)),
                    channel=Channel.CHANNEL_TIKTOK_SHOP,
                ),
            )
        )
        for step, views in enumerate((1000, 1000 + 10 * (index + 1))):
            samples.append(
                (
                    sku,
                    iev.VideoSampled(
                        video_id=video_id,
                        observed_at=stamp(start + timedelta(minutes=10 * step)),
                        views=views,
                    ),
                )
            )
    for sku, message in registrations + samples:
        await publish(stack.bus, "ingest", sku, message)

    async def all_ranked() -> bool:
        reply = await stack.signal.RankHeat(
            spb.RankHeatRequest(skus=[f"BULK-{i:04d}" for i in range(1000)], limit=1000), timeout=10
        )
        return len(reply.skus) == 1000

    await eventually(all_ranked, within=120, what="a thousand SKUs with heat")
    timings = []
    for _ in range(3):
        began = time.perf_counter()
        status, html, _ = await page(browser, f"{stack.url}/")
        timings.append(time.perf_counter() - began)
        assert status == 200
    assert html.count('data-testid="sku-row"') == 1000
    timings.sort()
    print(f"Now with 1,000 SKUs: {', '.join(f'{t * 1000:.0f} ms' for t in timings)}")
    assert timings[1] < 0.5, f"Now took {timings} s for 1,000 SKUs"
