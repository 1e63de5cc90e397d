"""The console in headless Chromium against the real stack (see conftest.py).

A rising video pushed through ingest reaches Now without a reload and its SKU page shows the
pulse marker and the forecast fan; a reservation changes the SKU page's stock figures live;
a double click on Approve creates one purchase order, and a signed-out visitor can neither
see a working Approve nor approve with a forged POST (nor can another site make a signed-in
operator approve); hostile strings render as text; every page fits 1280 px and a phone's
390 px and is reachable from the navigation, starts with a skip link for the keyboard,
carries the Content-Security-Policy (which the browser enforces) and logs no error or
violation. A screenshot of each page is saved (conftest.screenshots_dir); the README's
(docs/console.png) is rewritten when PULSESTOCK_UPDATE_README_SHOT is set.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

import pytest
from playwright.async_api import Browser, Page, expect
from pulsestock.clock import timestamp as stamp
from pulsestock.console.entrypoints.http import CONTENT_SECURITY_POLICY
from pulsestock.v1 import fulfillment_pb2 as fpo
from pulsestock.v1 import ingest_events_pb2 as iev
from pulsestock.v1 import ingest_pb2
from pulsestock.v1 import inventory_sync_pb2 as inv
from pulsestock.v1.common_pb2 import Channel, OrderLine

from tests.browser.conftest import (
    DESKTOP,
    HOSTILE_RULE,
    PHONE,
    ROOT,
    BrowserStack,
    Rising,
    Watched,
    screenshots_dir,
    sign_in,
    watch,
)

pytestmark = pytest.mark.slow
LIVE_MS = 5_000  # a change reaches an open page within this (the console aims for 1 s)
PULSE_MS = 30_000  # from the video's samples in ingest to its SKU ranked on Now
NOT_RELOADED = "() => window.__sameDocument === true"
LIVE_ID = "LIVE-EVENING-3"
README_SHOT = ROOT / "docs" / "console.png"
HOSTILE_IMG = "<img src=x onerror=alert(1)>"
HOSTILE_SVG = '"><svg onload=alert(2)>'


async def mark_document(page: Page) -> None:
    """A mark that a reload (or any navigation) would erase."""
    await page.evaluate("() => { window.__sameDocument = true; }")


async def live(page: Page) -> None:
    """The page's live updates are connected (so what happens next reaches it)."""
    await expect(page.get_by_test_id("live-status")).to_have_attribute(
        "data-state", "live", timeout=10_000
    )


async def purchase_orders(stack: BrowserStack, sku: str) -> list[str]:
    reply = await stack.fulfillment.ListPurchaseOrders(
        fpo.ListPurchaseOrdersRequest(sku=sku), timeout=10
    )
    return [po.purchase_order_id for po in reply.purchase_orders]


async def open_page(watched: Watched, url: str) -> None:
    response = await watched.page.goto(url)
    assert response is not None
    assert response.status == 200, f"{url}: {response.status}"
    assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY


async def test_a_rising_video_reaches_now_live_and_its_page_shows_the_pulse_and_the_fan(
    stack: BrowserStack, rising: Rising, visitor: Watched
) -> None:
    page = visitor.page
    await open_page(visitor, f"{stack.url}/")
    await live(page)
    await mark_document(page)
    row = page.locator(f'[data-testid=sku-row][data-sku="{rising.sku}"]')
    assert await row.count() == 0
    pushed = time.monotonic()
    await rising.push()  # the video's 180 samples, then its 40 orders
    await expect(row).to_be_visible(timeout=PULSE_MS)
    pulse = page.locator(f'[data-testid=active-pulse][data-sku="{rising.sku}"]')
    await expect(pulse).to_be_visible(timeout=PULSE_MS)
    shown_after = time.monotonic() - pushed
    assert await page.evaluate(NOT_RELOADED), "Now was reloaded, not updated in place"
    state = await pulse.get_by_test_id("pulse-state").get_attribute("data-state")
    assert state in {"detected", "peaking", "decaying"}
    print(f"{rising.sku} pulsing on Now {shown_after:.1f} s after its push into ingest began")

    # Its page: the pulse marker on the heat chart, the fan once the forecast includes it.
    await open_page(visitor, f"{stack.url}/sku/{rising.sku}")
    await live(page)
    await expect(page.get_by_test_id("pulse-marker").first).to_be_attached()
    assert await page.locator("[data-testid=pulse-marker] line").count() >= 1
    await expect(page.get_by_test_id("forecast-fan")).to_be_visible(timeout=PULSE_MS)
    await expect(page.get_by_test_id("forecast-p50")).to_be_visible()
    assert await page.get_by_test_id("actual-orders").count() > 0
    box = await page.get_by_test_id("forecast-fan").bounding_box()
    assert box is not None
    assert box["width"] > 100
    assert box["height"] > 5  # a band, not a line
    await visitor.assert_quiet()
    # The README's picture: this page down to its stock (heat with the pulse, the fan);
    # PULSESTOCK_UPDATE_README_SHOT=1 writes it to docs/console.png.
    stock = await page.locator("#sku-stock").bounding_box()
    assert stock is not None
    height = min(stock["y"] + stock["height"] + 16, 2400)
    shot = await page.screenshot(
        path=screenshots_dir() / "sku-pulse-1280.png",
        full_page=True,
        clip={"x": 0, "y": 0, "width": DESKTOP["width"], "height": height},
    )
    if os.environ.get("PULSESTOCK_UPDATE_README_SHOT"):  # so a test run leaves git clean
        README_SHOT.write_bytes(shot)


async def test_a_reservation_changes_the_open_sku_pages_stock_live(
    stack: BrowserStack, visitor: Watched
) -> None:
    sku, warehouse = "MUG-RESV-4", "wh-live"
    received = await stack.inventory.Receive(
        inv.ReceiveRequest(sku=sku, warehouse_id=warehouse, quantity=10, command_id="resv-in"),
        timeout=10,
    )
    # The page reads the read model, which follows the log: open it once the receipt is
    # there (its event may go out before the page listens).
    await stack.inventory.GetStock(
        inv.GetStockRequest(sku=sku, min_stream_version=received.stream_version), timeout=15
    )
    page = visitor.page
    await open_page(visitor, f"{stack.url}/sku/{sku}")
    stock = page.locator(f'[data-testid=stock-row][data-warehouse="{warehouse}"]')
    await expect(stock.get_by_test_id("stock-on-hand")).to_have_text("10")
    await expect(stock.get_by_test_id("stock-reserved")).to_have_text("0")
    await live(page)
    await mark_document(page)
    reserved = time.monotonic()
    reply = await stack.inventory.Reserve(
        inv.ReserveRequest(
            channel=Channel.CHANNEL_SHOPIFY,
            channel_order_id="resv-order-1",
            lines=[OrderLine(sku=sku, quantity=3)],
            paid=True,
        ),
        timeout=10,
    )
    assert reply.reserved, reply
    await expect(stock.get_by_test_id("stock-reserved")).to_have_text("3", timeout=LIVE_MS)
    shown_after = time.monotonic() - reserved
    await expect(stock.get_by_test_id("stock-warehouse-available")).to_have_text("7")
    await expect(page.get_by_test_id("stock-available")).to_have_text("7")
    await expect(stock.get_by_test_id("stock-on-hand")).to_have_text("10")
    assert await page.evaluate(NOT_RELOADED), "the SKU page was reloaded, not updated in place"
    print(f"a reservation on the open SKU page after {shown_after * 1000:.0f} ms")
    await visitor.assert_quiet()


async def test_a_signed_out_visitor_has_no_working_approve_nor_can_another_site_make_one(
    stack: BrowserStack, held: Rising, browser: Browser, visitor: Watched
) -> None:
    recommendation = await held.recommendation()
    assert recommendation.quantity > 0
    sku_url = f"{stack.url}/sku/{held.sku}"
    approve_url = f"{sku_url}/approve"
    page = visitor.page
    await open_page(visitor, sku_url)
    shown = page.locator(
        f'[data-testid=recommendation][data-recommendation-id="{recommendation.recommendation_id}"]'
    )
    await expect(shown).to_be_visible()
    await expect(shown.get_by_test_id("approve-signed-out")).to_be_visible()
    await expect(page.get_by_test_id("approve-button")).to_have_count(0)
    await expect(page.get_by_test_id("approve-form")).to_have_count(0)

    # A forged POST from the page itself, with the page's own CSRF token: refused.
    status = await page.evaluate(
        """async ([url, id]) => {
          const csrf = document.querySelector("meta[name=csrf]").content;
          const body = new URLSearchParams({ recommendation_id: id, csrf: csrf });
          return (await fetch(url, { method: "POST", body: body })).status;
        }""",
        [approve_url, recommendation.recommendation_id],
    )
    assert status == 403
    # The same as a form built in the page and submitted: refused, with a message.
    await page.evaluate(
        """([url, id]) => {
          const form = document.createElement("form");
          form.method = "post";
          form.action = url;
          const fields = { recommendation_id: id,
                           csrf: document.querySelector("meta[name=csrf]").content };
          for (const [name, value] of Object.entries(fields)) {
            const input = document.createElement("input");
            input.type = "hidden"; input.name = name; input.value = value;
            form.appendChild(input);
          }
          document.body.appendChild(form);
          form.submit();
        }""",
        [approve_url, recommendation.recommendation_id],
    )
    await expect(page.get_by_test_id("error-message")).to_contain_text("Sign in to approve")
    assert await purchase_orders(stack, held.sku) == []

    # Signed in in another tab, the operator opens another site whose form posts to Approve:
    # the session cookie stays home (SameSite=Lax: none on another site's POST) and the form
    # has no token: refused.
    operator = await browser.new_context(viewport=DESKTOP)  # type: ignore[arg-type]
    try:
        tab = await operator.new_page()
        await sign_in(tab, stack.url)
        hostile_site = "http://shop-deals.example/"
        answers: list[int] = []
        await tab.route(
            hostile_site,
            lambda route: route.fulfill(
                content_type="text/html",
                body=(
                    f'<form method="post" action="{approve_url}">'
                    f'<input name="recommendation_id" value="{recommendation.recommendation_id}">'
                    '<button id="go">Claim your prize</button></form>'
                ),
            ),
        )
        tab.on("response", lambda r: answers.append(r.status) if r.url == approve_url else None)
        await tab.goto(hostile_site)
        async with tab.expect_response(approve_url) as answered:
            await tab.click("#go")
        assert (await answered.value).status == 403
    finally:
        await operator.close()
    assert answers == [403]
    assert await purchase_orders(stack, held.sku) == []


async def test_signed_in_a_double_click_on_approve_creates_exactly_one_purchase_order(
    stack: BrowserStack, rising: Rising, visitor: Watched
) -> None:
    recommendation = await rising.recommendation()
    assert recommendation.quantity > 0
    assert await purchase_orders(stack, rising.sku) == []
    page = visitor.page
    await sign_in(page, stack.url)
    sku_url = f"{stack.url}/sku/{rising.sku}"
    await open_page(visitor, sku_url)
    shown = page.locator(
        f'[data-testid=recommendation][data-recommendation-id="{recommendation.recommendation_id}"]'
    )
    button = shown.get_by_test_id("approve-button")
    await expect(button).to_be_visible()
    posts: list[str] = []
    page.on("request", lambda r: posts.append(r.url) if r.method == "POST" else None)
    await button.dblclick()
    notice = page.get_by_test_id("notice")
    await expect(notice).to_contain_text("created", timeout=15_000)
    created = await purchase_orders(stack, rising.sku)
    assert len(created) == 1, created
    assert posts == [f"{sku_url}/approve"], posts  # the page sent the form once
    await expect(notice).to_contain_text(f"Purchase order {created[0]} created")
    await expect(
        page.locator(f'[data-testid=purchase-order][data-po-id="{created[0]}"]')
    ).to_be_visible()

    # The form sent twice at once (a browser without the page's script): still one order.
    statuses = await page.evaluate(
        """async ([url, id]) => {
          const csrf = document.querySelector("meta[name=csrf]").content;
          const send = () => fetch(url, { method: "POST",
            body: new URLSearchParams({ recommendation_id: id, csrf: csrf }) });
          const answers = await Promise.all([send(), send()]);
          return answers.map((answer) => answer.status);
        }""",
        [f"{sku_url}/approve", recommendation.recommendation_id],
    )
    assert statuses == [200, 200]  # each followed to the SKU page
    assert await purchase_orders(stack, rising.sku) == created
    await visitor.assert_quiet()


async def test_hostile_strings_render_as_text(
    stack: BrowserStack, held: Rising, visitor: Watched
) -> None:
    page = visitor.page
    # A SKU in the address that is markup: the title shows it as text.
    await open_page(visitor, f"{stack.url}/sku/{quote(HOSTILE_IMG, safe='')}")
    await expect(page.get_by_test_id("sku-title")).to_have_text(HOSTILE_IMG)
    assert await page.title() == f"{HOSTILE_IMG} · pulsestock"
    await expect(page.get_by_test_id("error-message").first).to_be_visible()  # refused
    # Typed into the search box: the same.
    await page.get_by_test_id("sku-search").fill(HOSTILE_SVG)
    await page.get_by_test_id("sku-search").press("Enter")
    await expect(page.get_by_test_id("sku-title")).to_have_text(HOSTILE_SVG)
    # A rule's name that is markup comes back as the pulse's evidence: text on Now.
    await held.push()
    await open_page(visitor, f"{stack.url}/")
    pulse = page.locator(f'[data-testid=active-pulse][data-sku="{held.sku}"]')
    await expect(pulse).to_be_visible(timeout=PULSE_MS)
    await expect(pulse.get_by_test_id("pulse-evidence")).to_contain_text(HOSTILE_RULE)
    # None of it became an element, and no script ran.
    assert await page.locator("main img, main svg[onload], main script").count() == 0
    await page.evaluate("() => new Promise((done) => setTimeout(done, 0))")  # a turn of the loop
    assert visitor.dialogs == []
    await visitor.assert_quiet()


async def push_live_session(stack: BrowserStack, sku: str) -> None:
    """Ten minutes of a live session through ingest: viewers, interactions, orders grow."""
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=11)
    samples = [
        iev.LiveSampled(
            live_id=LIVE_ID,
            skus=[sku],
            observed_at=stamp(start + timedelta(minutes=minute)),
            concurrent_viewers=400 + 180 * minute,
            interactions=90 * minute * (minute + 1),
            orders_so_far=minute * (minute + 1) // 2,
        )
        for minute in range(10)
    ]

    async def requests() -> AsyncIterator[ingest_pb2.PushLiveSamplesRequest]:
        yield ingest_pb2.PushLiveSamplesRequest(samples=samples)

    reply = await stack.ingest.PushLiveSamples(requests(), timeout=10)
    assert reply.accepted == len(samples), reply


PAGES = {
    "now": "/",
    "sku": "/sku/{sku}",
    "channels": "/channels",
    "live": f"/live/{LIVE_ID}",
    "signin": "/signin",
}


async def test_every_page_fits_desktop_and_phone_widths_with_its_navigation_reachable(
    stack: BrowserStack, rising: Rising, browser: Browser
) -> None:
    await rising.push()
    await push_live_session(stack, rising.sku)
    folder = screenshots_dir()
    for name, viewport in (("1280", DESKTOP), ("390", PHONE)):
        context = await browser.new_context(viewport=viewport)  # type: ignore[arg-type]
        context.set_default_timeout(15_000)
        try:
            watched = await watch(context)
            page = watched.page
            for page_name, path in PAGES.items():
                await open_page(watched, stack.url + path.format(sku=rising.sku))
                if page_name == "live":
                    await expect(page.get_by_test_id("live-chart")).to_be_visible(timeout=PULSE_MS)
                if page_name == "sku":
                    await expect(page.get_by_test_id("forecast-fan")).to_be_visible(
                        timeout=PULSE_MS
                    )
                overflow = await page.evaluate(
                    "() => [document.scrollingElement.scrollWidth, window.innerWidth]"
                )
                assert overflow[0] <= overflow[1], f"{page_name} at {name} px: {overflow}"
                for link in ("nav-now", "nav-channels", "nav-live"):
                    await expect(page.get_by_test_id(link)).to_be_in_viewport()
                if name == "1280" or page_name == "now":
                    await page.screenshot(path=folder / f"{page_name}-{name}.png", full_page=True)
            # And the navigation takes the visitor there.
            await page.get_by_test_id("nav-channels").click()
            await expect(page).to_have_url(f"{stack.url}/channels")
            await expect(page.get_by_test_id("nav-channels")).to_have_attribute(
                "aria-current", "page"
            )
            await watched.assert_quiet()
        finally:
            await context.close()


async def test_the_keyboard_reaches_the_skip_link_first_then_the_navigation_with_focus_shown(
    stack: BrowserStack, visitor: Watched
) -> None:
    page = visitor.page
    await open_page(visitor, f"{stack.url}/")
    order = []
    for _ in range(5):
        await page.keyboard.press("Tab")
        focused = await page.evaluate(
            """() => {
              const el = document.activeElement;
              const box = el.getBoundingClientRect();
              const style = getComputedStyle(el);
              return { testid: el.dataset.testid || el.className, text: el.textContent.trim(),
                       visible: el.matches(":focus-visible"), outline: style.outlineStyle,
                       width: parseFloat(style.outlineWidth),
                       onScreen: box.width > 0 && box.left >= 0 && box.top >= 0
                                 && box.right <= innerWidth };
            }"""
        )
        assert focused["visible"], focused
        assert focused["outline"] != "none", focused
        assert focused["width"] >= 2, focused
        assert focused["onScreen"], focused
        order.append(focused["testid"])
    assert order == ["skip-link", "brand", "nav-now", "nav-channels", "nav-live"], order
    # The skip link takes focus past the navigation, to the page's content.
    for _ in range(4):
        await page.keyboard.press("Shift+Tab")
    assert await page.evaluate("() => document.activeElement.className") == "skip-link"
    await page.keyboard.press("Enter")
    assert await page.evaluate("() => document.activeElement.id") == "main"
    await visitor.assert_quiet()


async def test_every_page_carries_the_csp_which_the_browser_enforces_and_logs_nothing(
    stack: BrowserStack, visitor: Watched
) -> None:
    page = visitor.page
    for path in ("/", "/sku/ANY-SKU-1", "/channels", "/live", "/signin"):
        await open_page(visitor, stack.url + path)  # asserts the header
        if path != "/signin":
            await live(page)  # the live updates' stream is allowed too
    await visitor.assert_quiet()
    # The policy holds: markup slipped into the page cannot run an inline handler.
    await page.evaluate(
        """() => document.querySelector("main").insertAdjacentHTML("beforeend",
             '<img src="data:," onerror="window.__ran = 1">')"""
    )
    await page.wait_for_function("() => window.__cspViolations.length > 0", timeout=5_000)
    assert await page.evaluate("() => window.__ran") is None
    assert all(v.startswith("script-src") for v in await visitor.csp_violations())


async def test_following_a_link_from_another_site_keeps_the_operator_signed_in(
    stack: BrowserStack, browser: Browser
) -> None:
    operator = await browser.new_context(viewport=DESKTOP)  # type: ignore[arg-type]
    try:
        tab = await operator.new_page()
        await sign_in(tab, stack.url)
        chat = "http://chat.example/"
        await tab.route(
            chat,
            lambda route: route.fulfill(
                content_type="text/html",
                body=f'<a id="go" href="{stack.url}/channels">the console</a>',
            ),
        )
        await tab.goto(chat)
        await tab.click("#go")
        await expect(tab).to_have_url(f"{stack.url}/channels")
        # The operator then types the console's address: the session is still there.
        await tab.goto(f"{stack.url}/")
        await expect(tab.get_by_test_id("sign-out")).to_be_visible()
    finally:
        await operator.close()
