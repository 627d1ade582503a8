"""The console in headless chromium against a `cuemsg serve` (run_server) whose
messages the test sent: sign in, the mailboxes, a message's timeline, a new
message appearing live, redrive of a dead letter, a wrong key, a phone's
width and the keyboard. Each step leaves a screenshot (tests/console/conftest.py).

The tests run in file order and share one browser and one server.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from cuemsg import CueClient, Mailbox
from cuemsg.testing import run_server
from tests.console.conftest import WAIT, Scene, Shots

pytest.importorskip("selenium", reason="selenium is not installed (pip install -e '.[test]')")

from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait


def _found(driver: Any, css: str) -> Any:
    """The elements `css` selects (an empty list, falsy, while there are none)."""
    return driver.find_elements(By.CSS_SELECTOR, css)


def until(driver: Any, condition: Callable[[Any], Any], what: str) -> Any:
    """Wait for `condition(driver)` to be truthy; fail saying what never happened."""
    try:
        # Live pages replace rows as events arrive: a row gone stale is looked up again.
        wait = WebDriverWait(
            driver, WAIT, poll_frequency=0.1, ignored_exceptions=[StaleElementReferenceException]
        )
        return wait.until(condition)
    except TimeoutException:
        shown = driver.find_element(By.TAG_NAME, "main").text
        pytest.fail(f"{what} (within {WAIT} s); the page says: {shown!r}")


def text_of(driver: Any, css: str) -> str:
    return str(driver.find_element(By.CSS_SELECTOR, css).text)


def has_text(css: str, text: str) -> Callable[[Any], bool]:
    def check(driver: Any) -> bool:
        return any(text in e.text for e in driver.find_elements(By.CSS_SELECTOR, css))

    return check


def extensions(scene: Scene) -> list[str]:
    return list(httpx.get(f"{scene.server.base_url}/v1/info").json().get("extensions", []))


def sign_in(driver: Any, scene: Scene, key: str | None = None) -> None:
    driver.get(f"{scene.server.base_url}/console")
    driver.execute_script("sessionStorage.clear()")
    driver.refresh()
    field = until(driver, lambda d: d.find_elements(By.ID, "key"), "the sign-in form appears")[0]
    field.send_keys(key or scene.server.api_key)
    field.send_keys(Keys.ENTER)


def signed_in(driver: Any, scene: Scene) -> None:
    """Sign in and land on the mailboxes: each test starts so, none leans on another's session."""
    sign_in(driver, scene)
    until(driver, has_text("main h1", "Mailboxes"), "the sign-in lands on the mailboxes")


def test_a_wrong_key_is_refused_with_a_clear_message(
    browser: Any, scene: Scene, shots: Shots
) -> None:
    sign_in(browser, scene, "cue_sk_" + "0" * 32)
    until(browser, has_text("#signin-error", "did not accept that key"), "the refusal is shown")
    assert "401" in text_of(browser, "#signin-error")
    assert browser.execute_script("return sessionStorage.length") == 0  # nothing kept
    assert not browser.find_element(By.ID, "nav").is_displayed()
    shots.take(browser, "wrong-key")
    # An empty key is refused before any request, with what a key looks like.
    field = browser.find_element(By.ID, "key")
    field.clear()
    field.send_keys(Keys.ENTER)
    until(browser, has_text("#signin-error", "Paste an API key first"), "the empty key is refused")


def test_sign_in_and_see_the_mailboxes(browser: Any, scene: Scene, shots: Shots) -> None:
    sign_in(browser, scene)
    row = f'tr[data-cue="{scene.writer.address}"]'
    until(browser, has_text(row, "writer"), "the writer mailbox is listed")
    # Counts fill in: one waiting (the review), one dead letter (the outro).
    until(
        browser,
        lambda d: text_of(d, f"{row} td:nth-of-type(1)") == "1",
        "the waiting count shows 1",
    )
    assert text_of(browser, f"{row} td:nth-of-type(1)") == "1"  # waiting
    assert text_of(browser, f"{row} td:nth-of-type(2)") == "0"  # in flight
    assert text_of(browser, f"{row} td:nth-of-type(3)") == "1"  # dead letters
    assert scene.writer.address in text_of(browser, row)
    assert browser.execute_script("return sessionStorage.length") == 1  # the key, this tab only
    shots.take(browser, "mailboxes")
    browser.find_element(By.LINK_TEXT, "writer").click()
    until(browser, has_text("main h1", "writer"), "the writer mailbox opens")
    until(
        browser,
        lambda d: len(d.find_elements(By.CSS_SELECTOR, "tbody tr")) == 4,
        "its four messages are listed",
    )
    rows = browser.find_elements(By.CSS_SELECTOR, "tbody tr")
    # Newest first, each state in words as well as colour.
    assert "review the draft" in rows[0].text and "waiting" in rows[0].text
    assert "draft the outro" in rows[1].text and "dead letter" in rows[1].text
    assert "draft the intro" in rows[2].text and "done" in rows[2].text
    assert "request" in rows[3].text and "done" in rows[3].text
    shots.take(browser, "mailbox")
    # The state filter keeps only the dead letter.
    browser.find_element(By.CSS_SELECTOR, "nav.filters a.state-failed").click()
    until(
        browser,
        lambda d: len(d.find_elements(By.CSS_SELECTOR, "tbody tr")) == 1,
        "the filter keeps one row",
    )
    assert "draft the outro" in text_of(browser, "tbody")


def test_open_a_message_timeline(browser: Any, scene: Scene, shots: Shots) -> None:
    signed_in(browser, scene)
    browser.get(f"{scene.server.base_url}/console/#/mailbox/{scene.writer.address}")
    until(
        browser,
        lambda d: len(d.find_elements(By.CSS_SELECTOR, "tbody tr")) == 4,
        "the messages are listed",
    )
    request_row = browser.find_element(By.CSS_SELECTOR, f'tr[data-execution="{scene.request_id}"]')
    request_row.find_element(By.CSS_SELECTOR, "a.row-link").click()
    until(browser, has_text(".timeline", "Sent by planner"), "the timeline shows the sender")
    timeline = text_of(browser, "main .timeline")
    assert "Claimed by" in timeline and "attempt 1 of" in timeline and "Done" in timeline
    # The body and the envelope, pretty-printed; the reply with its own timeline.
    assert '"text": "agents talk to agents"' in text_of(browser, "pre[aria-label='message body']")
    envelope = text_of(browser, "pre[aria-label='envelope']")
    assert '"kind": "request"' in envelope and '"thread": "t-7"' in envelope
    until(browser, has_text(".reply", "Reply"), "the reply is shown")
    assert '"words": 4' in text_of(browser, "pre[aria-label='reply body']")
    assert "Sent by writer" in text_of(browser, ".reply .timeline")
    shots.take(browser, "timeline")
    # The thread: the conversation in order, both directions.
    assert "events.stream" in extensions(scene)  # the thread view reads the feed
    browser.find_element(By.LINK_TEXT, "t-7").click()
    until(
        browser,
        lambda d: len(d.find_elements(By.CSS_SELECTOR, ".thread li")) >= 5,
        "the thread lists its messages",
    )
    bubbles = [li.text for li in browser.find_elements(By.CSS_SELECTOR, ".thread li")]
    assert "agents talk to agents" in bubbles[0] and "planner → writer" in bubbles[0]
    assert "words" in bubbles[1] and "writer → planner" in bubbles[1]
    assert "review the draft" in bubbles[-1]
    shots.take(browser, "thread")


def test_a_new_message_appears_live(browser: Any, scene: Scene, shots: Shots) -> None:
    signed_in(browser, scene)
    assert "events.stream" in extensions(scene)  # the embedded server serves the feed
    browser.get(f"{scene.server.base_url}/console/#/mailbox/{scene.writer.address}")
    until(browser, has_text("#live", "Live"), "the live feed connects")
    until(
        browser,
        lambda d: len(d.find_elements(By.CSS_SELECTOR, "tbody tr")) >= 4,
        "the messages are listed",
    )
    browser.execute_script("window.__sameDocument = true")
    scene.planner.send(scene.writer.address, {"goal": "a late idea"})
    until(
        browser, has_text("tbody tr:first-child", "a late idea"), "the new message appears on top"
    )
    assert browser.execute_script("return window.__sameDocument === true")  # no reload
    shots.take(browser, "live")
    # A state change shows live too: the writer takes the oldest waiting one, its row says done.
    for msg in scene.writer.receive(wait=2, limit=1):
        assert msg.body == {"goal": "review the draft"}
        msg.ack()

    def review_done(driver: Any) -> bool:
        rows = driver.find_elements(By.CSS_SELECTOR, "tbody tr")
        return any("review the draft" in r.text and "done" in r.text for r in rows)

    until(browser, review_done, "the reviewed message's row turns done")
    assert browser.execute_script("return window.__sameDocument === true")


def test_redrive_a_dead_letter(browser: Any, scene: Scene, shots: Shots) -> None:
    signed_in(browser, scene)
    assert "executions.redrive" in extensions(scene)
    browser.get(f"{scene.server.base_url}/console/#/dead")
    row_css = f'tr[data-execution="{scene.dead_id}"]'
    until(browser, has_text(row_css, "the outline is missing"), "the dead letter shows its error")
    shots.take(browser, "dead-letters")
    browser.find_element(By.CSS_SELECTOR, f"{row_css} input.pick").click()
    button = browser.find_element(
        By.XPATH, "//button[starts-with(normalize-space(), 'Redrive selected')]"
    )
    assert button.text == "Redrive selected (1)"
    button.click()
    until(browser, has_text(".toolbar .result", "1 sent again"), "the redrive's result is shown")
    shots.take(browser, "redriven")
    # The record agrees: the dead letter names the new execution, which is waiting.
    dead = scene.client.executions.get(scene.dead_id).raw or {}
    assert dead["redriven_to"]
    cell = text_of(browser, f"{row_css} td.redrive")
    assert "✓ sent again" in cell and dead["redriven_to"][:8] in cell
    fresh = scene.client.executions.get(dead["redriven_to"])
    assert fresh.status == "pending" and fresh.payload["message"] == {"goal": "draft the outro"}
    # Its timeline links back to the dead letter.
    browser.find_element(By.CSS_SELECTOR, f"{row_css} td.redrive a").click()
    until(browser, has_text(".timeline", "a redrive of"), "the new message links the dead one")
    # A second redrive of the same dead letter changes nothing, and says so.
    browser.get(f"{scene.server.base_url}/console/#/message/{scene.dead_id}")
    until(
        browser, has_text(".timeline", "Sent again (redriven)"), "the dead letter names its redrive"
    )
    assert not browser.find_elements(
        By.XPATH, "//button[normalize-space()='Redrive this dead letter']"
    )


def test_redrive_one_by_its_button_and_a_failed_redrive_says_why(
    browser: Any, scene: Scene, shots: Shots
) -> None:
    signed_in(browser, scene)
    assert "executions.redrive" in extensions(scene)
    with Mailbox.open(scene.client, "scratch") as scratch:
        scene.planner.send(scratch.address, {"x": 1})
        scene.planner.send(scratch.address, {"x": 2})
        for msg in scratch.receive(wait=2, limit=2):
            msg.reject("no")
        address = scratch.address
    first, second = (
        f'tr[data-execution="{e.id}"]'
        for e in scene.client.executions.list(cue_id=address, status="failed").executions
    )
    browser.get(f"{scene.server.base_url}/console/#/dead?cue_id={address}")
    until(browser, lambda d: d.find_elements(By.CSS_SELECTOR, second), "both dead letters show")
    browser.find_element(By.CSS_SELECTOR, first).find_element(
        By.XPATH, ".//button[normalize-space()='Redrive']"
    ).click()
    until(browser, has_text(f"{first} td.redrive", "✓ sent again"), "the one redrive succeeds")
    # The mailbox is deleted: the other one has nowhere to go, and the row says so.
    gone = httpx.delete(
        f"{scene.server.base_url}/v1/cues/{address}",
        headers={"Authorization": f"Bearer {scene.server.api_key}"},
    )
    assert gone.status_code == 204
    browser.find_element(By.CSS_SELECTOR, f"{second} input.pick").click()
    browser.find_element(By.XPATH, "//button[normalize-space()='Redrive selected (1)']").click()
    until(browser, has_text(".toolbar .result", "1 failed"), "the summary counts the failure")
    assert "0 sent again" in text_of(browser, ".toolbar .result")
    assert f"✗ cue '{address}' not found" in text_of(browser, f"{second} td.redrive")
    shots.take(browser, "redrive-failed")


def test_a_big_mailbox_pages_by_cursor(browser: Any, scene: Scene, shots: Shots) -> None:
    signed_in(browser, scene)
    with Mailbox.open(scene.client, "bulk") as bulk:
        for start in range(0, 120, 40):
            scene.planner.send_many(bulk.address, [{"n": n} for n in range(start, start + 40)])
        browser.get(f"{scene.server.base_url}/console/#/mailbox/{bulk.address}")

        def bodies(driver: Any) -> list[str]:
            return [a.text for a in driver.find_elements(By.CSS_SELECTOR, "tbody a.row-link")]

        until(browser, lambda d: len(bodies(d)) == 50, "the first page holds 50 messages")
        assert "120 messages" in text_of(browser, "main")
        assert bodies(browser)[0] == '{"n":119}' and bodies(browser)[-1] == '{"n":70}'
        browser.find_element(By.LINK_TEXT, "Older »").click()
        until(browser, lambda d: bodies(d)[:1] == ['{"n":69}'], "the next page starts after it")
        assert len(bodies(browser)) == 50 and bodies(browser)[-1] == '{"n":20}'
        assert "70 older messages" in text_of(browser, "main")  # counted from the cursor on
        browser.find_element(By.LINK_TEXT, "Older »").click()
        until(browser, lambda d: bodies(d)[:1] == ['{"n":19}'], "the last page opens")
        assert len(bodies(browser)) == 20 and bodies(browser)[-1] == '{"n":0}'
        assert not browser.find_elements(By.LINK_TEXT, "Older »")  # the end
        shots.take(browser, "last-page")
        browser.find_element(By.LINK_TEXT, "« Newest").click()
        until(browser, lambda d: bodies(d)[:1] == ['{"n":119}'], "Newest goes back to the top")


def test_phone_width_has_no_sideways_scroll(browser: Any, scene: Scene, shots: Shots) -> None:
    signed_in(browser, scene)
    browser.set_window_size(390, 844)
    try:
        for page, marker in (
            ("#/mailboxes", f'tr[data-cue="{scene.writer.address}"]'),
            (f"#/message/{scene.request_id}", ".timeline"),
        ):
            browser.get(f"{scene.server.base_url}/console/{page}")
            until(browser, functools.partial(_found, css=marker), page)
            wide = browser.execute_script(
                "return document.documentElement.scrollWidth - window.innerWidth"
            )
            assert wide <= 0, f"{page} is {wide}px wider than a phone screen"
            shots.take(browser, "phone-" + page.split("/")[1])
    finally:
        browser.set_window_size(1280, 860)


def test_keyboard_reaches_a_mailbox_and_a_message(browser: Any, scene: Scene, shots: Shots) -> None:
    sign_in(browser, scene)
    browser.get(f"{scene.server.base_url}/console/#/mailboxes")
    until(
        browser,
        has_text(f'tr[data-cue="{scene.writer.address}"]', "writer"),
        "the mailboxes are listed",
    )
    body = browser.find_element(By.TAG_NAME, "body")
    for _ in range(30):
        body.send_keys(Keys.TAB)
        if browser.switch_to.active_element.text == "writer":
            break
    else:
        pytest.fail("Tab never reached the writer mailbox's link")
    browser.switch_to.active_element.send_keys(Keys.ENTER)
    until(browser, has_text("main h1", "writer"), "Enter opens the mailbox")
    until(
        browser, lambda d: d.find_elements(By.CSS_SELECTOR, "a.row-link"), "the messages are listed"
    )
    focused = ""
    for _ in range(30):
        browser.switch_to.active_element.send_keys(Keys.TAB)
        focused = browser.switch_to.active_element.get_attribute("class") or ""
        if "row-link" in focused:
            break
    assert "row-link" in focused, "Tab never reached a message"
    browser.switch_to.active_element.send_keys(Keys.ENTER)
    until(browser, has_text("main h2", "Timeline"), "Enter opens the message")


def test_what_cannot_be_shown_says_why(browser: Any, scene: Scene, shots: Shots) -> None:
    sign_in(browser, scene)
    until(browser, has_text("main h1", "Mailboxes"), "the sign-in lands on the mailboxes")
    base = f"{scene.server.base_url}/console/"
    for page, says in (
        ("#/nowhere", "There is no page #/nowhere."),
        ("#/mailbox/cue_nosuchcue000", "Could not open the mailbox cue_nosuchcue000"),
        ("#/message/no-such-execution", "Could not read the message no-such-execution"),
    ):
        browser.get(base + page)
        until(browser, has_text("main .notice.error", says), f"{page} says what is wrong")
    assert "not found" in text_of(browser, "main .notice.error")
    # A key that stops working mid-session brings the sign-in back, saying so.
    browser.execute_script("sessionStorage.setItem('cuemsg.console.key', 'cue_sk_revoked')")
    browser.get(base + "#/dead")
    until(browser, has_text("#signin-error", "no longer accepts this key"), "the form returns")
    assert browser.execute_script("return sessionStorage.length") == 0
    shots.take(browser, "key-refused")


def test_a_plain_cueapi_server_has_no_live_updates_and_no_redrive(browser: Any) -> None:
    with run_server(extensions=False) as plain, CueClient(plain.api_key, plain.base_url) as client:
        with Mailbox.open(client, "inbox") as inbox:
            inbox.send(inbox.address, {"note": "to self"})
            for msg in inbox.receive(wait=2, limit=1):
                msg.reject("not today")
        browser.get(f"{plain.base_url}/console")
        browser.execute_script("sessionStorage.clear()")
        browser.refresh()
        field = until(browser, lambda d: d.find_elements(By.ID, "key"), "the sign-in form")[0]
        field.send_keys(plain.api_key, Keys.ENTER)
        until(browser, has_text("#live", "Live updates off"), "the top bar says there is no feed")
        assert "events.stream" in (browser.find_element(By.ID, "live").get_attribute("title") or "")
        browser.get(f"{plain.base_url}/console/#/dead")
        until(browser, has_text("main .notice", "does not offer redrive"), "redrive is not offered")
        assert "not today" in text_of(browser, "tbody")
        assert not browser.find_elements(By.CSS_SELECTOR, "tbody button, tbody input")
