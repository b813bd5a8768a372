"""The review page driven as an annotator would, in a real headless Chromium.

Needs Debian's ``chromium`` and ``chromium-driver`` (``.ci/run`` installs them) and selenium
(a test extra). Without the browser these tests fail: the page is a promise like any other.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "dog_park.flac"
QUERY = "dog barks"
CONTEXT = 0.5  # seconds the page plays around an event


def chromium():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
    driver = shutil.which("chromedriver")
    if binary is None or driver is None:
        pytest.fail("the review page tests need Chromium and its driver: "
                    "apt-get install chromium chromium-driver (.ci/run does)")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--autoplay-policy=no-user-gesture-required", "--window-size=1280,800",
                     "--mute-audio"):
        options.add_argument(argument)
    return webdriver.Chrome(service=Service(driver), options=options)


@pytest.fixture
def browser():
    driver = chromium()
    driver.set_window_size(1280, 800)
    yield driver
    driver.quit()


@pytest.fixture
def detected(tmp_path):
    """A folder made by `flam detect -o` with the debug model (its thresholds chosen so that the
    random model marks several events on the example)."""
    out = tmp_path / "out"
    run = subprocess.run([sys.executable, "-m", "flamcli", "detect", str(EXAMPLE), QUERY, "-m", "debug",
                          "-t", "0.115", "-o", str(out), "--quiet"], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    record = json.loads((out / "dog_park.detect.json").read_text())
    assert len(record["events"]) >= 3, record["events"]
    return out, record


@pytest.fixture
def served(detected):
    out, record = detected
    process = subprocess.Popen([sys.executable, "-m", "flamcli", "review", str(out), "--no-browser"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    url = process.stdout.readline().strip()
    assert url.startswith("http://127.0.0.1:"), process.stderr.read()
    yield out, record, url, process
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=20)


def wait_for(driver, script, timeout=20.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = driver.execute_script("return " + script)
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {script}: errors "
                         f"{driver.execute_script('return flamReview.errors')}")


def settle(driver):
    wait_for(driver, "window.flamReview && flamReview.ready && flamReview.busy === 0")


def keys(driver, text):
    from selenium.webdriver.common.action_chains import ActionChains

    driver.execute_script("document.getElementById('canvas').focus()")
    ActionChains(driver).send_keys(text).perform()
    settle(driver)


def state(driver):
    return driver.execute_script("return flamReview.file.events")


def drag(driver, start_time, end_time, y=100):
    """Press at ``start_time`` and release at ``end_time`` on the canvas (y in CSS pixels)."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    canvas = driver.find_element(By.ID, "canvas")
    width, height = driver.execute_script(
        "const c = document.getElementById('canvas'); return [c.clientWidth, c.clientHeight]")
    x0, x1 = (driver.execute_script(f"return flamReview.timeToX({t})") for t in (start_time, end_time))
    chain = ActionChains(driver)
    chain.move_to_element_with_offset(canvas, round(x0 - width / 2), round(y - height / 2))
    chain.click_and_hold().move_by_offset(round((x1 - x0) / 2), 0).move_by_offset(
        round(x1 - x0) - round((x1 - x0) / 2), 0).release().perform()
    return driver.execute_script("return (flamReview.view.end - flamReview.view.start) / "
                                 "document.getElementById('canvas').clientWidth")


def test_an_annotator_reviews_a_folder_in_chromium(browser, served):
    out, record, url, process = served
    events = sorted(record["events"], key=lambda e: (e["onset"], e["offset"]))
    browser.get(url)
    settle(browser)
    assert browser.title == "flam review"
    assert browser.execute_script("return flamReview.selected") == "d0"

    # play: the page fetches the event with half a second around it, at the file's own rate
    keys(browser, " ")
    playback = wait_for(browser, "flamReview.lastPlayback && ['playing', 'ended'].includes("
                                 "flamReview.lastPlayback.state) && flamReview.lastPlayback")
    assert playback["event"] == "d0"
    assert playback["start"] == pytest.approx(max(0, events[0]["onset"] - CONTEXT), abs=1e-9)
    assert playback["end"] == pytest.approx(events[0]["offset"] + CONTEXT, abs=1e-9)
    duration = wait_for(browser, "document.getElementById('player').duration")
    assert duration == pytest.approx(playback["end"] - playback["start"], abs=1e-3)

    keys(browser, "a")  # accept d0; the page moves on to the next pending event
    assert browser.execute_script("return flamReview.selected") == "d1"
    keys(browser, "r")  # reject d1
    assert browser.execute_script("return flamReview.selected") == "d2"
    keys(browser, "]")  # d2's onset 0.1 s later
    moved_onset = round(events[2]["onset"] + 0.1, 6)
    assert next(e for e in state(browser) if e["id"] == "d2")["onset"] == pytest.approx(moved_onset)

    # drag d2's offset edge 0.4 s to the right with the mouse
    target = events[2]["offset"] + 0.4
    seconds_per_pixel = drag(browser, events[2]["offset"], target)
    settle(browser)
    moved = next(e for e in state(browser) if e["id"] == "d2")
    assert abs(moved["offset"] - target) <= 2 * seconds_per_pixel
    keys(browser, "a")  # accept d2

    # add a missed event by dragging over a stretch with no detection
    gaps = [(a["offset"], b["onset"]) for a, b in zip([{"offset": 0.0}] + events, events)]
    gap = max(gaps, key=lambda g: g[1] - g[0])
    assert gap[1] - gap[0] > 1.2
    add_from, add_to = gap[0] + 0.3, gap[1] - 0.3
    keys(browser, "0")  # whole file in view
    seconds_per_pixel = drag(browser, add_from, add_to)
    wait_for(browser, "!document.getElementById('add-bar').hidden")
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    field = browser.find_element(By.ID, "add-label")
    field.clear()
    field.send_keys("bird song", Keys.ENTER)
    settle(browser)
    added = next(e for e in state(browser) if e["origin"] == "added")
    assert added["label"] == "bird song" and added["status"] == "accepted"
    assert abs(added["onset"] - add_from) <= 2 * seconds_per_pixel
    assert abs(added["offset"] - add_to) <= 2 * seconds_per_pixel

    # relabel d0 with free text, then undo it after a reload
    browser.find_element(By.CSS_SELECTOR, '#events tr[data-id="d0"]').click()
    settle(browser)
    assert browser.execute_script("return flamReview.selected") == "d0"
    keys(browser, "e")
    label = browser.find_element(By.ID, "label")
    label.send_keys(Keys.CONTROL, "a")
    label.send_keys("a dog barking", Keys.ENTER)
    settle(browser)
    assert next(e for e in state(browser) if e["id"] == "d0")["label"] == "a dog barking"

    browser.refresh()  # decisions were saved as they were made
    settle(browser)
    shown = {e["id"]: e for e in state(browser)}
    assert (shown["d0"]["status"], shown["d1"]["status"], shown["d2"]["status"]) == \
        ("accepted", "rejected", "accepted")
    assert shown["d0"]["label"] == "a dog barking" and shown[added["id"]]["label"] == "bird song"
    keys(browser, "u")  # undo the relabel
    assert next(e for e in state(browser) if e["id"] == "d0")["label"] == QUERY
    assert browser.execute_script("return flamReview.errors") == []

    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=20)
    assert process.returncode == 0 and "Traceback" not in err

    # the reviewed files, byte for byte: accepted and added events, in time order
    log = [json.loads(line) for line in (out / "review.jsonl").read_text().splitlines()]
    assert [entry["action"] for entry in log] == ["accept", "reject", "move", "move", "accept",
                                                  "add", "relabel", "undo"]
    dragged_offset = log[3]["after"]["offset"]
    assert log[2]["after"]["onset"] == moved_onset
    rows = sorted([(events[0]["onset"], events[0]["offset"], QUERY),
                   (moved_onset, dragged_offset, QUERY),
                   (added["onset"], added["offset"], "bird song")])
    assert (out / "dog_park.reviewed.labels.txt").read_text() == "".join(
        f"{a:.6f}\t{b:.6f}\t{text}\n" for a, b, text in rows)
    assert (out / "dog_park.reviewed.tsv").read_text() == "filename\tonset\toffset\tevent_label\n" + "".join(
        f"{record['file']}\t{a:.3f}\t{b:.3f}\t{text}\n" for a, b, text in rows)  # as detect named it


def test_the_page_fits_a_narrow_window(browser, served):
    """At phone width nothing is cut off sideways and the event list is still reachable."""
    _, _, url, _ = served
    browser.set_window_size(420, 800)
    browser.get(url)
    settle(browser)
    widths = browser.execute_script(
        "return [document.documentElement.scrollWidth, document.documentElement.clientWidth,"
        " document.getElementById('canvas').clientWidth]")
    assert widths[0] <= widths[1] and widths[2] > 300
    rows = browser.execute_script("return document.querySelectorAll('#events tbody tr').length")
    assert rows == len(browser.execute_script("return flamReview.file.events"))
