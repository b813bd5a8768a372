#!/usr/bin/env python
"""How fast the `flam review` page opens, measured in a real headless Chromium.

Two folders made by ``flam detect -o`` with the debug model (timing does not depend on the
weights: the page shows what detect wrote):

* ``many``: 200 files of 10 s. Measured from the request of the page until the file list is
  shown and until the first file's view (picture, curves, events) is drawn.
* ``long``: one recording of 1 hour (16 kHz FLAC). Measured from the request of the page until
  its view is drawn, cold (no cached picture: the server computes it from sampled frames of the
  file) and warm (the picture cached beside the review), and the server's own time for the
  whole-file picture and for a 30 s zoomed picture.

Every figure is the median (and worst) of ``--repeats`` page loads. Needs Debian's chromium and
chromium-driver and selenium (the test extras).

    python bench/bench_review.py                    # the figures in docs/benchmarks.md
    python bench/bench_review.py --files 20 --hours 0.1 --repeats 2   # a quick look
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf


def make_audio(path: Path, seconds: float, rate: int = 16_000, seed: int = 0) -> None:
    """Noise with a few louder bursts, written in 10 s blocks (never held whole)."""
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with sf.SoundFile(str(path), "w", rate, 1, format=path.suffix[1:].upper()) as out:
        done = 0
        while done < seconds * rate:
            n = int(min(10 * rate, seconds * rate - done))
            block = 0.01 * rng.standard_normal(n)
            if (done // (10 * rate)) % 7 == 3:
                block += 0.3 * np.sin(2 * np.pi * 700 * np.arange(n) / rate)
            out.write(block.astype(np.float32))
            done += n


def detect(audio, out: Path) -> float:
    began = time.perf_counter()
    subprocess.run([sys.executable, "-m", "flamcli", "detect", str(audio), "dog barks", "-m", "debug",
                    "-t", "0.115", "-o", str(out), "--no-plot", "--quiet"], check=True,
                   stdout=subprocess.DEVNULL)
    return time.perf_counter() - began


def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or shutil.which("google-chrome")
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,800",
                     "--disable-dev-shm-usage"):
        options.add_argument(argument)
    return webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)


def load(driver, url: str) -> dict:
    driver.get("about:blank")
    driver.get(url)
    end = time.monotonic() + 120
    while time.monotonic() < end:
        timings = driver.execute_script(
            "return window.flamReview && flamReview.ready && flamReview.openedAt"
            " ? {list: flamReview.listShownAt, view: flamReview.openedAt} : null")
        if timings:
            return timings
        time.sleep(0.02)
    raise TimeoutError(url)


class Review:
    def __init__(self, folder: Path):
        self.process = subprocess.Popen([sys.executable, "-m", "flamcli", "review", str(folder),
                                         "--no-browser", "--quiet"], stdout=subprocess.PIPE, text=True)
        self.url = self.process.stdout.readline().strip()

    def close(self):
        self.process.send_signal(signal.SIGINT)
        self.process.wait(timeout=30)


def summary(values: list[float]) -> dict:
    return {"median_ms": round(statistics.median(values), 1), "worst_ms": round(max(values), 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=200)
    parser.add_argument("--hours", type=float, default=1.0)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--work", type=Path, default=Path("/tmp/flam-bench-review"))
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "review.json")
    args = parser.parse_args()
    results = {"files": args.files, "hours": args.hours, "repeats": args.repeats}

    many_audio = args.work / f"many-{args.files}"
    if not (many_audio / f"clip{args.files - 1:03d}.wav").exists():
        for n in range(args.files):
            make_audio(many_audio / f"clip{n:03d}.wav", 10.0, seed=n)
    many = args.work / f"many-{args.files}-out"
    if not many.exists():
        results["detect_many_s"] = round(detect(many_audio, many), 1)
    long_audio = args.work / f"long-{args.hours:g}h.flac"
    if not long_audio.exists():
        make_audio(long_audio, args.hours * 3600)
    long = args.work / f"long-{args.hours:g}h-out"
    if not long.exists():
        results["detect_long_s"] = round(detect(long_audio, long), 1)

    driver = browser()
    try:
        review = Review(many)
        try:
            runs = [load(driver, review.url) for _ in range(args.repeats)]
        finally:
            review.close()
        results["many_list"] = summary([r["list"] for r in runs])
        results["many_first_view"] = summary([r["view"] for r in runs])

        cold, warm = [], []
        for _ in range(args.repeats):
            shutil.rmtree(long / ".review-cache", ignore_errors=True)
            review = Review(long)  # a fresh server: nothing in its memory either
            try:
                cold.append(load(driver, review.url)["view"])
                warm.append(load(driver, review.url)["view"])
            finally:
                review.close()
        results["long_view_cold"] = summary(cold)
        results["long_view_warm"] = summary(warm)
    finally:
        driver.quit()

    from flamcli.review.media import spectrogram_picture

    for name, (start, end, width) in {"long_picture_whole": (0, args.hours * 3600, 2048),
                                      "long_picture_30s": (args.hours * 1800, args.hours * 1800 + 30, 1280)}.items():
        times = []
        for _ in range(args.repeats):
            began = time.perf_counter()
            spectrogram_picture(long_audio, start, end, width)
            times.append(1000 * (time.perf_counter() - began))
        results[name] = summary(times)

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    print("| measurement | median | worst |\n|---|---:|---:|")
    for key, value in results.items():
        if isinstance(value, dict):
            print(f"| {key} | {value['median_ms']:.0f} ms | {value['worst_ms']:.0f} ms |")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
