"""Drives the live page in headless Chromium (Debian's chromium and
chromedriver, through selenium) for tests/live_page.rs.

    browser.py URL OUT_DIR

Prints one JSON line per step on stdout:
  {"step": "loaded", ...}   the page's rows and summary as first rendered
  {"step": "filtered", ...} after typing into the product filter
  {"step": "updated", ...}  once the responses shown have changed (it
                            waits for a line on stdin first: the test
                            sends answers, then says so)
  {"step": "polled", ...}   the refreshes the rows showed, untouched
  {"step": "sorted", ...}   the rows after a click on NPS, then another
  {"step": "paged", ...}    pages 1-3 at ?per_page=7, and page 2 again
                            after "previous"
  {"step": "why", ...}      the Why panel for every segment, then for the
                            first segment clicked, each with the API's
                            answer to the same query at the same refresh
  {"step": "teams", ...}    the Teams tab (team, then agent, over 30d)
                            and the Benchmarks card, each with the API's
                            answer at the same refresh, and how many
                            points each row's trend drew at first look
and writes OUT_DIR/live-page.png (the page some seconds after loading)
and OUT_DIR/why-panel.png (the Why panel of the segment clicked).

    browser.py --note URL

prints the page's state once it rendered (for the partitions note).
"""
import json
import sys
import time
import urllib.parse
import urllib.request

from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select


def state(driver):
    """What the page shows: its rows' data attributes and summary."""
    return driver.execute_script("""
        const rows = [...document.querySelectorAll('tr.segment')].map(tr => ({...tr.dataset,
            text_nps: tr.querySelector('td.nps').textContent,
            text_responses: tr.querySelector('td.responses').textContent}));
        const reasons = Object.fromEntries([...document.querySelectorAll('#reasons tr')]
            .map(tr => [tr.dataset.reason, Number(tr.dataset.count)]));
        return {
          ready: document.body.dataset.ready === '1',
          refreshed_at_ms: Number(document.getElementById('refreshed').dataset.ms),
          rows_ms: Number(document.getElementById('rows').dataset.ms),
          query: document.getElementById('rows').dataset.query,
          window: document.getElementById('window').value,
          status: document.getElementById('status').textContent,
          count: document.getElementById('count').textContent,
          consumed: document.getElementById('consumed').textContent,
          alerts: document.getElementById('alerts').textContent,
          partial_hidden: document.getElementById('partial').hidden,
          partial: document.getElementById('partial').textContent,
          cases_open: document.getElementById('cases-open').textContent,
          reasons: reasons,
          html: document.documentElement.outerHTML,
          rows: rows,
        };
    """)


def why(driver):
    """The Why panel: its themes' and root causes' data attributes."""
    return driver.execute_script("""
        const t = document.getElementById('themes');
        return {
          query: t.dataset.query || '',
          ms: Number(t.dataset.ms || 0),
          scope: document.getElementById('why-scope').textContent,
          themes: [...document.querySelectorAll('tr.theme')].map(tr => ({...tr.dataset,
              text_impact: tr.querySelector('td.impact-points').textContent})),
          causes: [...document.querySelectorAll('tr.cause')].map(tr => ({...tr.dataset})),
          selected: [...document.querySelectorAll('tr.segment.selected')].map(tr => ({...tr.dataset})),
        };
    """)


def same_refresh(read, cond, api_path, what):
    """What `read()` shows once `cond` holds, with the API's answer at
    `api_path(shown)` from the same refresh of the windows (`ms`)."""
    for _ in range(120):
        deadline = time.monotonic() + 30
        while True:
            shown = read()
            if shown["ms"] and cond(shown):
                break
            if time.monotonic() > deadline:
                raise SystemExit(f"timed out waiting for {what}")
            time.sleep(0.2)
        api = json.load(urllib.request.urlopen(api_path(shown)))
        if api["refreshed_at_ms"] == shown["ms"] and read()["ms"] == shown["ms"]:
            shown["api"] = api
            return shown
        time.sleep(0.3)
    raise SystemExit(f"the page and the API never showed the same refresh: {what}")


def why_with_api(driver, base, cond, what):
    """The Why panel once `cond` holds, with the API's themes."""
    return same_refresh(lambda: why(driver), cond, lambda w: f"{base}/api/v1/themes?{w['query']}", what)


def teams(driver):
    """The Teams tab's rows and the Benchmarks card's."""
    return driver.execute_script("""
        const v = document.getElementById('values');
        return {
          ms: Number(v.dataset.ms || 0), query: v.dataset.query || '',
          rows: [...document.querySelectorAll('tr.value')].map(tr => ({...tr.dataset,
              text_nps: tr.querySelector('td.nps').textContent,
              trend_points: Number(tr.querySelector('td.trend').dataset.points || 0)})),
          segment_trends: [...document.querySelectorAll('tr.segment td.trend')].map(td => Number(td.dataset.points || 0)),
          benchmarks: [...document.querySelectorAll('tr.benchmark')].map(tr => ({...tr.dataset})),
          tab_hidden: document.getElementById('tab-teams').hidden,
        };
    """)


def teams_with_api(driver, base, label):
    """The Teams tab showing `label` over 30d, with the API's leaderboard."""
    shows = lambda t: t["rows"] and t["query"].startswith(f"{label}?") and "window=30d" in t["query"]
    return same_refresh(lambda: teams(driver), shows, lambda t: f"{base}/api/v1/breakdowns/{t['query']}",
                        f"the {label} rows")


def wait(driver, cond, what, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        s = state(driver)
        if cond(s):
            return s
        time.sleep(0.2)
    raise SystemExit(f"timed out waiting for {what}")


def emit(step, s):
    s = dict(s)
    s["step"] = step
    print(json.dumps(s), flush=True)


def driver_for():
    opts = Options()
    opts.binary_location = "/usr/bin/chromium"
    for a in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              "--window-size=1440,1000"]:
        opts.add_argument(a)
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)


def note(url):
    """`browser.py --note URL`: the page's state once it rendered, one line."""
    driver = driver_for()
    try:
        driver.get(url)
        emit("note", wait(driver, lambda s: s["ready"] and s["refreshed_at_ms"] > 0, "the page"))
    finally:
        driver.quit()


def main():
    if sys.argv[1] == "--note":
        return note(sys.argv[2])
    url, out = sys.argv[1], sys.argv[2]
    driver = driver_for()
    try:
        driver.get(url)
        loaded = wait(driver, lambda s: s["ready"] and s["rows"], "the first rows")
        # The page's rows, the API's and /metrics at one refresh of the
        # windows: right after the page renders a poll, the API is asked
        # the same query; kept when it answers from the same refresh.
        base = url.rstrip("/")
        # On a loaded machine (CI building and testing on the same two
        # cores) a round trip can outlast a refresh many times in a row:
        # 30 tries were not always enough (2026-12-03).
        for _ in range(120):
            seen = state(driver)["rows_ms"]
            now = wait(driver, lambda s: s["rows_ms"] != seen, "a new poll")
            api = json.load(urllib.request.urlopen(f"{base}/api/v1/segments?{now['query']}"))
            metrics = urllib.request.urlopen(f"{base}/metrics").read().decode()
            again = json.load(urllib.request.urlopen(f"{base}/api/v1/segments?{now['query']}"))
            if api["refreshed_at_ms"] == now["rows_ms"] == again["refreshed_at_ms"]:
                loaded = now
                loaded["api"] = api
                loaded["metrics"] = metrics
                break
        else:
            raise SystemExit("the page and the API never showed the same refresh")
        emit("loaded", loaded)
        # Filter on part of the first row's product.
        product = loaded["rows"][0]["product"]
        box = driver.find_element(By.ID, "product")
        box.send_keys(product[:4].lower())
        filtered = wait(driver, lambda s: s["rows"] and all(product[:4].lower() in r["product"].lower() for r in s["rows"])
                        and len(s["rows"]) < len(loaded["rows"]), "the filtered rows")
        emit("filtered", filtered)
        box.clear()
        box.send_keys(" ")
        sys.stdin.readline()
        before = {(r["product"], r["region"]): r["responses"] for r in wait(driver, lambda s: s["rows"], "rows")["rows"]}
        updated = wait(driver, lambda s: any(before.get((r["product"], r["region"])) not in (None, r["responses"])
                                             for r in s["rows"]), "an update", 60)
        emit("updated", updated)
        # A few more polls, so that the trends and rates have points.
        time.sleep(6)
        driver.save_screenshot(f"{out}/live-page.png")
        # Polling: the rows are fetched again every 2 s, untouched.
        stamps = set()
        deadline = time.monotonic() + 30
        while len(stamps) < 3 and time.monotonic() < deadline:
            stamps.add(state(driver)["rows_ms"])
            time.sleep(0.5)
        emit("polled", {"refreshes": sorted(stamps)})
        # Click-to-sort: NPS, descending first, then ascending.
        header = driver.find_element(By.CSS_SELECTOR, 'th[data-sort="nps"]')
        sorted_rows = {}
        for order in ["desc", "asc"]:
            header.click()
            sorted_rows[order] = wait(driver, lambda s: f"sort=nps&order={order}" in s["query"] and s["rows"],
                                      f"rows sorted by NPS, {order}")["rows"]
        emit("sorted", sorted_rows)
        # Paging: 7 rows a page (the page's ?per_page=), next and previous.
        driver.get(url.rstrip("/") + "/?per_page=7")
        first = wait(driver, lambda s: s["ready"] and s["rows"] and "page=1&" in s["query"], "page 1")
        pages = [first["rows"]]
        info = [driver.find_element(By.ID, "pageinfo").text]
        for n in [2, 3]:
            driver.find_element(By.ID, "next").click()
            s = wait(driver, lambda s: f"page={n}&" in s["query"] and s["rows"], f"page {n}")
            pages.append(s["rows"])
            info.append(driver.find_element(By.ID, "pageinfo").text)
        next_disabled = driver.find_element(By.ID, "next").get_property("disabled")
        driver.find_element(By.ID, "prev").click()
        back = wait(driver, lambda s: "page=2&" in s["query"] and s["rows"], "page 2 again")
        emit("paged", {"pages": pages, "info": info, "next_disabled": next_disabled,
                       "back": back["rows"], "query": first["query"]})
        # The Why panel: every segment, then the first segment clicked.
        driver.get(url)
        wait(driver, lambda s: s["ready"] and s["rows"], "the rows again")
        every = why_with_api(driver, base, lambda w: w["themes"] and not w["selected"], "themes of every segment")
        row = driver.find_element(By.CSS_SELECTOR, "tr.segment")
        product, region = row.get_attribute("data-product"), row.get_attribute("data-region")
        row.click()
        chosen = why_with_api(driver, base, lambda w: w["selected"] and "region=" in w["query"] and w["themes"],
                              "themes of the segment clicked")
        # Cases resolve seconds after their alerts in the demo: wait for
        # the segment's root causes, then read them with the API's.
        deadline = time.monotonic() + 60
        while not why(driver)["causes"] and time.monotonic() < deadline:
            time.sleep(0.5)
        causes = why(driver)["causes"]
        q = urllib.parse.urlencode({"product": product, "region": region})
        api_causes = json.load(urllib.request.urlopen(f"{base}/api/v1/root-causes?{q}"))
        driver.find_element(By.ID, "why").screenshot(f"{out}/why-panel.png")
        emit("why", {"every": every, "chosen": chosen, "product": product, "region": region,
                     "causes": causes, "api_causes": api_causes})
        # Teams: a fresh page; the segments' trends are drawn from the
        # engine at first look (no history watched); then the Teams tab.
        driver.get(url)
        wait(driver, lambda s: s["ready"] and s["rows"], "the rows of a fresh page")
        deadline = time.monotonic() + 20
        while not any(teams(driver)["segment_trends"]) and time.monotonic() < deadline:
            time.sleep(0.2)
        fresh = teams(driver)
        Select(driver.find_element(By.ID, "window")).select_by_value("30d")
        bench_api = None
        for _ in range(60):
            b = teams(driver)["benchmarks"]
            api = json.load(urllib.request.urlopen(f"{base}/api/v1/benchmarks?window=30d"))
            if b and [r["product"] for r in b] == [r["product"] for r in api["rows"]]:
                bench_api = api
                break
            time.sleep(0.5)
        benchmarks = teams(driver)["benchmarks"]
        driver.find_element(By.ID, "tab-teams").click()
        team = teams_with_api(driver, base, "team")
        time.sleep(3)
        team["trend_points"] = [r["trend_points"] for r in teams(driver)["rows"]]
        driver.find_element(By.ID, "teams-tab").screenshot(f"{out}/teams-tab.png")
        Select(driver.find_element(By.ID, "breakdown")).select_by_value("agent")
        agent = teams_with_api(driver, base, "agent")
        emit("teams", {"fresh_segment_trends": fresh["segment_trends"], "tab_hidden": fresh["tab_hidden"],
                       "benchmarks": benchmarks, "benchmarks_api": bench_api, "team": team, "agent": agent})
    finally:
        driver.quit()


if __name__ == "__main__":
    main()
