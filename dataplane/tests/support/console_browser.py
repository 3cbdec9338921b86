"""Drives simgate's web console in headless Chromium (Debian's `chromium`,
through Playwright's `executable_path`: no browser download) the way an
operator would, and checks what the page shows against what devices do.

Run by dataplane/tests/e2e_console.rs:

    console_browser.py --api http://127.0.0.1:P --device http://127.0.0.1:Q \
        --token T --auth-key-id K --auth-key S --imsi I --shots DIR

Devices post from 127.0.0.1, the demo SIM's session address. Exits non-zero
with the reason on the first check that fails; prints a JSON summary.
"""

import argparse
import json
import math
import os
import sys
import time
import urllib.error
import urllib.request

from playwright.sync_api import expect, sync_playwright

# Long enough for a few auto-refreshes (every 5 s) on a loaded CI machine;
# a check that cannot pass fails after this.
WAIT_MS = 30_000
expect.set_options(timeout=WAIT_MS)


def fail(msg):
    print(f"console_browser: FAILED: {msg}", file=sys.stderr)
    sys.exit(1)


def check(cond, msg):
    if not cond:
        fail(msg)


def device_post(device, body, at_ms=None):
    """POST one Harvest entry as the device (Host routes to Harvest), at
    the device's time `at_ms` when given."""
    headers = {"Host": "harvest.soracom.io", "Content-Type": "application/json"}
    if at_ms is not None:
        headers["X-Soracom-Timestamp"] = str(at_ms)
    req = urllib.request.Request(
        device + "/",
        data=json.dumps(body, separators=(",", ":")).encode(),
        method="POST",
        headers=headers,
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def main():
    ap = argparse.ArgumentParser()
    for a in ("--api", "--device", "--token", "--auth-key-id", "--auth-key", "--imsi", "--shots"):
        ap.add_argument(a, required=True)
    ap.add_argument("--chromium", default=os.environ.get("CHROMIUM", "/usr/bin/chromium"))
    args = ap.parse_args()
    os.makedirs(args.shots, exist_ok=True)
    console = args.api + "/console/"
    imsi = args.imsi
    summary = {}
    problems = []

    def shot(page, name):
        page.screenshot(path=os.path.join(args.shots, name + ".png"), full_page=True)

    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=args.chromium,
            headless=True,
            # Root in a container has no user namespace for the sandbox.
            args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
        )
        ctx = browser.new_context(viewport={"width": 1280, "height": 860}, accept_downloads=True)
        page = ctx.new_page()
        page.set_default_timeout(WAIT_MS)

        # Script errors and CSP violations fail the run; a refused API call
        # is logged by Chromium as a resource error, which the bad-token
        # step causes on purpose.
        def on_console(msg):
            if msg.type == "error" and "Failed to load resource" not in msg.text:
                problems.append("console: " + msg.text)

        page.on("console", on_console)
        page.on("pageerror", lambda e: problems.append(f"page error: {e}"))

        # --- a bad token is refused, with the API's reason -----------------
        page.goto(console)
        expect(page.locator("#login")).to_be_visible()
        page.fill("#login-token", "not-a-token")
        page.click("#login-form button[type=submit]")
        err = page.locator("#login-error")
        expect(err).to_contain_text("Login refused")
        expect(err).to_contain_text("invalid_token")
        check(page.locator("#page").is_hidden(), "a page is shown after a refused login")
        check(
            page.evaluate("sessionStorage.length") == 0,
            "a refused token was kept in sessionStorage",
        )
        shot(page, "login-refused")

        # --- log in with the token; find the demo SIM online ----------------
        page.fill("#login-token", args.token)
        page.click("#login-form button[type=submit]")
        row = page.locator(f'#sims tr[data-imsi="{imsi}"]')
        expect(row).to_have_attribute("data-online", "true")
        expect(row).to_have_attribute("data-status", "active")
        expect(row.locator("td.online")).to_have_text("online")
        expect(row).to_contain_text("127.0.0.1")
        expect(row).to_contain_text("demo-sim")
        check(args.token not in page.url, "the token is in the URL")
        stored = page.evaluate("JSON.stringify(sessionStorage)")
        check(args.token in stored, "the token is not in sessionStorage")
        check(
            page.evaluate("localStorage.length") == 0,
            "something was written to localStorage",
        )
        shot(page, "sims-login")

        # --- Harvest: entries posted by the device appear on the chart -----
        page.goto(console + f"#/harvest?imsi={imsi}&range=1h")
        chart = page.locator("#harvest-chart")
        expect(chart).to_have_attribute("data-points", "0")
        # The last hour as the device reported it (its own timestamps),
        # then the newest entries as they arrive.
        now_ms = int(time.time() * 1000)
        history = [(now_ms - (20 - i) * 170_000, round(19 + 3 * math.sin(i / 3), 2)) for i in range(20)]
        for at, t in history:
            status = device_post(args.device, {"temp": t, "battery": {"volts": 3.3}}, at)
            check(status == 201, f"device Harvest POST answered {status}")
        temps = [t for _, t in history] + [20.5, 21.0, 22.25, 21.75]
        for t in temps[len(history):]:
            status = device_post(args.device, {"temp": t, "battery": {"volts": 3.3}})
            check(status == 201, f"device Harvest POST answered {status}")
        # Auto-refresh (on by default) brings them in without a click.
        n = len(temps)
        expect(chart).to_have_attribute("data-points", str(2 * n))
        series = json.loads(chart.get_attribute("data-series"))
        check(series == ["temp", "battery.volts"], f"chart series {series}")
        plotted = page.evaluate("SG.harvestPlot.data[1]")
        check(plotted == temps, f"uPlot's temp line is {plotted}, want {temps}")
        check(
            page.locator(".u-legend").count() == 1,
            "uPlot did not draw its legend",
        )
        # One more while watching: the chart grows on its own.
        check(device_post(args.device, {"temp": 23.0}) == 201, "device POST refused")
        expect(chart).to_have_attribute("data-points", str(2 * n + 1))
        rows = page.locator("#harvest-entries tbody tr")
        # 25 entries: a full page of 20 (newest first), then the API's next page.
        expect(rows.first).to_contain_text('{"temp":23.0}')
        expect(rows).to_have_count(20)
        page.locator("#harvest-entries + .pager button", has_text="Older").click()
        expect(rows).to_have_count(n + 1 - 20)
        expect(rows.last).to_contain_text(json.dumps(history[0][1]))
        page.locator("#harvest-entries + .pager button", has_text="Newer").click()
        expect(rows).to_have_count(20)
        expect(rows.first).to_contain_text('{"temp":23.0}')
        with page.expect_download() as dl:
            page.click("#h-csv")
        path = dl.value.path()
        with open(path, encoding="utf-8") as f:
            csv = f.read()
        check(csv.startswith("time,time_iso,imsi,content_type,content"), f"CSV header: {csv[:80]}")
        check(csv.count("\n") == n + 2, f"CSV rows: {csv!r}")
        check('"{""temp"":20.5' in csv, f"CSV content not quoted as expected: {csv!r}")
        summary["harvest_points"] = int(chart.get_attribute("data-points"))
        page.locator("#h-auto").uncheck()
        shot(page, "harvest")

        # --- Groups: the API's validation error next to the namespace ------
        page.goto(console + "#/groups?group=demo")
        ns = page.locator('.ns[data-ns="SoracomHarvest"]')
        expect(ns.locator("textarea")).to_have_value('{\n  "enabled": true\n}')
        ns.locator("textarea").fill('{"enabled": "yes"}')
        ns.locator("button[data-save]").click()
        expect(page.locator('[data-error-for="SoracomHarvest"]')).to_contain_text(
            "enabled must be true or false"
        )
        shot(page, "groups-error")
        ns.locator("textarea").fill('{"enabled": true}')
        ns.locator("button[data-save]").click()
        expect(page.locator('[data-error-for="SoracomHarvest"]')).to_have_text("")
        shot(page, "groups")

        # --- suspend the SIM: the device is refused; activate: served ------
        page.goto(console + "#/sims")
        row = page.locator(f'#sims tr[data-imsi="{imsi}"]')
        row.click()
        page.click('#sim-detail button[data-action="suspend"]')
        expect(row).to_have_attribute("data-status", "suspended")
        expect(page.locator("#sim-action-result")).to_have_text("Done.")
        status = device_post(args.device, {"refused": 1})
        check(status == 403, f"a suspended SIM's device got {status}, want 403")
        summary["suspended_device_status"] = status
        shot(page, "sims-suspended")

        # --- Live: refused, then served traffic while watching -------------
        page.goto(console + "#/live")
        expect(page.locator("#live-messages .u-legend")).to_have_count(1)
        for _ in range(3):
            check(device_post(args.device, {"refused": 1}) == 403, "suspended device served")
        page.wait_for_function(
            "() => (SG.liveHistory.refusals.series.sim_not_active || []).some((v) => v > 0)"
        )
        page.goto(console + "#/sims")
        row.click()
        page.click('#sim-detail button[data-action="activate"]')
        expect(row).to_have_attribute("data-status", "active")
        page.goto(console + "#/live")
        expect(page.locator("#live-messages .u-legend")).to_have_count(1)
        for t in (25, 26, 27):
            check(device_post(args.device, {"temp": t}) == 201, "device POST refused")
        page.wait_for_function(
            "() => (SG.liveHistory.messages.series.harvest || []).some((v) => v > 0)"
        )
        series = json.loads(page.locator("#live-messages").get_attribute("data-series"))
        check("harvest" in series, f"live series {series}")
        shot(page, "live")

        page.goto(console + "#/sims")
        row.click()
        status = device_post(args.device, {"temp": 24})
        check(status == 201, f"a re-activated SIM's device got {status}, want 201")

        # Tags: set one from the page, filter by it.
        page.fill("#d-tag-name", "site")
        page.fill("#d-tag-value", "north-field")
        page.click('#sim-detail button[data-action="put-tag"]')
        expect(page.locator("#sim-detail .tags")).to_contain_text("north-field")
        page.fill("#f-tag-name", "site")
        page.fill("#f-tag-value", "south")
        page.click("form.bar button[type=submit]")
        expect(page.locator("#sims tbody tr")).to_have_count(0)
        page.fill("#f-tag-value", "north-field")
        page.click("form.bar button[type=submit]")
        expect(page.locator("#sims tbody tr")).to_have_count(1)

        # --- log out; log in with an auth key ------------------------------
        page.click("#logout")
        expect(page.locator("#login")).to_be_visible()
        check(page.evaluate("sessionStorage.length") == 0, "logout left the token behind")
        page.fill("#login-key-id", args.auth_key_id)
        page.fill("#login-key", "secret-wrong")
        page.click("#login-form button[type=submit]")
        expect(page.locator("#login-error")).to_contain_text("AUM0001")
        page.fill("#login-key", args.auth_key)
        page.click("#login-form button[type=submit]")
        row = page.locator(f'#sims tr[data-imsi="{imsi}"]')
        expect(row).to_be_visible()
        expect(row.locator("td.last-data")).not_to_have_text("")
        shot(page, "sims")
        stored = json.loads(page.evaluate("sessionStorage.getItem('simgate.console.auth')"))
        check(stored.get("kind") == "key" and stored.get("apiKey"), f"auth-key session {stored}")
        check(args.auth_key not in json.dumps(stored), "the auth key secret was stored")

        browser.close()

    check(not problems, "; ".join(problems))
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
