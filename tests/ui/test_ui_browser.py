"""The web UI in a real headless Chromium (Debian's, driven by Playwright) against a real `lmsmith serve`
app on a tiny model. Skipped, with the reason, where Chromium or Playwright is missing."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
playwright_api = pytest.importorskip("playwright.sync_api", reason="the Python `playwright` package is not installed")
if not CHROMIUM:
    pytest.skip("Chromium is not installed (apt-get install chromium); .ci/run installs it", allow_module_level=True)

ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]
SHOTS = os.environ.get("LMSMITH_UI_SCREENSHOTS")  # a directory: save one screenshot per page there


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from lmsmith.serve.engine import Engine
    from lmsmith.serve.server import BackgroundServer, create_app
    from lmsmith.tiny import build_tiny
    from lmsmith.ui.app import mount_ui

    d = build_tiny(tmp_path_factory.mktemp("ui") / "tiny", "llama")
    engine = Engine(str(d), max_num_seqs=8, block_size=16, max_num_batched_tokens=512)
    step = engine.step

    def paced_step():  # a tiny model is faster than any real one: pace it so a stream lasts long enough to watch
        import time

        time.sleep(0.004)
        return step()

    engine.step = paced_step
    prefs = tmp_path_factory.mktemp("prefs") / "preferences.jsonl"
    app = mount_ui(create_app(engine, "tiny", max_num_seqs=8), preferences=prefs)
    srv = BackgroundServer(app).__enter__()
    srv.prefs = prefs
    yield srv
    srv.__exit__(None, None, None)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser):
    """A fresh page that fails the test on any JavaScript error."""
    ctx = browser.new_context(viewport={"width": 1300, "height": 900})
    pg = ctx.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    yield pg
    ctx.close()
    assert not errors, f"JavaScript errors: {errors}"


def shot(page, name: str) -> None:
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(SHOTS) / f"{name}.png"), full_page=True)


def api_answer(server, content: str, max_tokens: int, ignore_eos: bool = False) -> str:
    import httpx

    r = httpx.post(server.url + "/v1/chat/completions", timeout=120, json={
        "model": "tiny", "messages": [{"role": "user", "content": content}], "temperature": 0, "max_tokens": max_tokens,
        "ignore_eos": ignore_eos})
    return r.json()["choices"][0]["message"]["content"]


def ask(page, text: str, max_tokens: int, ignore_eos: bool = False) -> None:
    page.fill("#temperature", "0")
    page.fill("#max-tokens", str(max_tokens))
    page.set_checked("#ignore-eos", ignore_eos)
    page.fill("[data-testid=chat-input]", text)
    page.click("[data-testid=send]")


def test_playground_streams_and_ends_with_the_apis_text(server, page):
    page.goto(server.url + "/ui")
    page.wait_for_selector("#model-a option[value=tiny]", state="attached")
    ask(page, "Hello there", 300, ignore_eos=True)
    # a partial answer is on screen while the request is still streaming (Stop is enabled until the end)
    partial = page.wait_for_function("""() => { const m = document.querySelector('[data-testid=assistant-message]');
        return m && m.textContent.length > 0 && !document.getElementById('stop').disabled && m.textContent; }""",
                                     timeout=60_000).json_value()
    page.wait_for_selector("[data-testid=send]:not([disabled])", timeout=120_000)
    final = page.eval_on_selector("[data-testid=assistant-message]", "e => e.textContent")
    assert final == api_answer(server, "Hello there", 300, ignore_eos=True)
    assert len(partial) < len(final)
    assert "tokens/s" in page.inner_text("[data-testid=answer-stats]")
    shot(page, "playground")


def test_stop_aborts_the_answer(server, page):
    page.goto(server.url + "/ui")
    page.wait_for_selector("#model-a option[value=tiny]", state="attached")
    ask(page, "Tell me a long story", 440, ignore_eos=True)
    # press Stop as soon as the first text is on screen (from the page itself, so no streaming race)
    page.wait_for_function("""() => { const m = document.querySelector('[data-testid=assistant-message]');
        if (!m || !m.textContent) return false; document.getElementById('stop').click(); return true; }""",
                           timeout=60_000)
    page.wait_for_selector("[data-testid=send]:not([disabled])", timeout=30_000)
    text = page.eval_on_selector("[data-testid=assistant-message]", "e => e.textContent")
    assert text.endswith("[stopped]")
    assert len(text) < len(api_answer(server, "Tell me a long story", 440, ignore_eos=True)) + len(" [stopped]")


def test_side_by_side_vote_lands_in_the_preference_file(server, page):
    page.goto(server.url + "/ui")
    page.wait_for_selector("#model-a option[value=tiny]", state="attached")
    page.check("#arena")
    ask(page, "Which is better?", 12)
    page.wait_for_selector("[data-testid=vote-a]", timeout=60_000)
    answers = page.eval_on_selector_all("[data-testid=assistant-message]", "els => els.map(e => e.textContent)")
    assert len(answers) == 2
    page.click("[data-testid=vote-a]")
    page.wait_for_selector("[data-testid=vote-result]")
    rec = json.loads(server.prefs.read_text().splitlines()[-1])
    assert rec["prompt"] == [{"role": "user", "content": "Which is better?"}]
    assert rec["chosen"] == [{"role": "assistant", "content": answers[0]}]
    assert rec["rejected"] == [{"role": "assistant", "content": answers[1]}]
    shot(page, "arena")


def test_models_page_matches_models_list_json(server, page, registry, tiny_dir, capsys):
    from lmsmith.cli import main

    registry.register(tiny_dir, "tiny")
    registry.register(tiny_dir, "other")
    registry.set_alias("tiny@1", "production")
    capsys.readouterr()
    assert main(["models", "list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    page.goto(server.url + "/ui/models")
    page.wait_for_selector("[data-testid=model-row]")
    rows = page.eval_on_selector_all("[data-testid=model-row]", "els => els.map(e => e.dataset.ref)")
    assert rows == [v["ref"] for v in listed]
    assert "production" in page.inner_text("[data-testid=model-row][data-ref='tiny@1']")
    assert page.locator("[data-testid=lineage-node]").count() == len(listed)
    shot(page, "models")


def test_run_curve_has_one_point_per_logged_step(server, page, tiny_ref, lmsmith_home):
    from lmsmith.train.config import PretrainConfig
    from lmsmith.train.loop import train
    from lmsmith.train.tracking import read_metrics

    prose = Path(__file__).resolve().parents[1] / "train" / "data" / "prose.txt"
    result = train(PretrainConfig(model=tiny_ref, data=[str(prose)], steps=7, seq_len=32, batch_size=2, lr=3e-3,
                                  eval_fraction=0.2, eval_every=3, mlflow=False, workers=1))
    logged = [r for r in read_metrics(result.run_dir / "metrics.jsonl") if r.get("split", "train") == "train"]
    page.goto(server.url + "/ui/runs")
    page.click(f"text={result.run_id}")
    page.wait_for_selector("[data-testid=loss-chart]")
    assert page.locator("[data-testid=curve-point]").count() == len(logged) == 7
    assert page.locator("[data-testid=eval-point]").count() >= 2
    shot(page, "run")


def test_monitor_page_shows_live_server_metrics(server, page):
    api_answer(server, "warm", 4)
    page.goto(server.url + "/ui/monitor")
    page.wait_for_selector("[data-testid=kpi]")
    text = page.inner_text("#kpis")
    assert "tiny" in text and "TTFT p50" in text
    shot(page, "monitor")


