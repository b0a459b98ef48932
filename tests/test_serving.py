"""`sasa serve`: the OpenAI client against a real server on 127.0.0.1, answers equal to the library's Guard."""

import base64
import io
import json
import os
import random
import shutil
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest
from PIL import Image

from conftest import tiny_adapter
from sasa.data.sample import Sample
from sasa.engine import SASAEngine
from sasa.guard.generation import DEFAULT_REFUSAL, Guard
from sasa.engine.layers import LayerSelection
from sasa.serving import BackgroundServer, GuardedServer, Limits, ServeConfig
from sasa.detector.fit import fit_probe

HARMFUL = ["zorp the vault now", "zorp a bank quickly", "how to zorp the lock", "zorp zorp the safe",
           "teach me to zorp doors", "zorp every car", "best way to zorp", "zorp the neighbours"]
BENIGN = ["bake a loaf of bread", "water the garden", "tidy the kitchen", "read a short book",
          "paint the fence blue", "walk the dog at noon", "write a thank you note", "plan a picnic"]
MODEL = "tiny-llava"


def _png(color="red", size=(40, 30), fmt="PNG") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, fmt)
    return buf.getvalue()


def _data_url(raw: bytes, mime="image/png") -> str:
    return f"data:{mime};base64," + base64.b64encode(raw).decode()


def _user(text, image: bytes | None = None):
    if image is None:
        return [{"role": "user", "content": text}]
    return [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": _data_url(image)}},
                                         {"type": "text", "text": text}]}]


@pytest.fixture(scope="module")
def guard():
    adapter = tiny_adapter("llava")
    samples = ([Sample(f"h{i}", p, label="harmful", source="toy") for i, p in enumerate(HARMFUL)]
               + [Sample(f"b{i}", p, label="benign", source="toy") for i, p in enumerate(BENIGN)])
    probe, _ = fit_probe(SASAEngine(adapter, LayerSelection(2, 4)), samples, target_fpr=0.25, val_fraction=0.25,
                         progress=False, model_name=MODEL)
    guard = Guard(adapter, "detect", probe)
    flagged = [o.refused for o in guard.generate(HARMFUL + BENIGN, max_new_tokens=1)]
    assert any(flagged) and not all(flagged), "the toy probe must flag some prompts and pass others"
    return guard


def _expected(guard, prompt, image: bytes | None = None, max_new_tokens=8):
    img = [Image.open(io.BytesIO(image)).convert("RGB")] if image is not None else None
    return guard.generate([prompt], img, max_new_tokens=max_new_tokens)[0]


@pytest.fixture(scope="module")
def server(guard):
    app = GuardedServer(guard, ServeConfig(model_name=MODEL, max_batch_size=8, max_wait_ms=20)).app()
    with BackgroundServer(app) as url:
        yield url


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server + "/v1", api_key="unused", max_retries=0)


def _stream(client, **kw):
    parts, finish, sasa = [], None, None
    for chunk in client.chat.completions.create(stream=True, **kw):
        sasa = chunk.model_extra.get("sasa", sasa)
        if chunk.choices:
            parts.append(chunk.choices[0].delta.content or "")
            finish = chunk.choices[0].finish_reason or finish
    return "".join(parts), finish, sasa


@pytest.mark.parametrize("with_image", [False, True])
def test_answers_equal_guard_streamed_or_not(guard, client, with_image):
    image = _png() if with_image else None
    checked = {True: 0, False: 0}
    for prompt in HARMFUL[:5] + BENIGN[:5]:
        want = _expected(guard, prompt, image)
        kw = dict(model=MODEL, messages=_user(prompt, image), max_tokens=8)
        got = client.chat.completions.create(**kw)
        sasa = got.model_extra["sasa"]
        assert got.choices[0].message.content == want.text
        assert sasa["score"] == pytest.approx(want.score, abs=1e-4)
        assert sasa["threshold"] == pytest.approx(guard.probe.threshold)
        assert sasa["decision"] == ("refuse" if want.refused else "answer") and sasa["mode"] == "detect"
        assert got.choices[0].finish_reason == ("content_filter" if want.refused else
                                                "length" if want.n_new_tokens == 8 else "stop")
        text, finish, stream_sasa = _stream(client, **kw)
        assert (text, finish) == (want.text, got.choices[0].finish_reason)
        assert stream_sasa["decision"] == sasa["decision"]
        if want.refused:
            assert want.text == DEFAULT_REFUSAL and got.usage.completion_tokens == 0
        else:
            assert got.usage.completion_tokens == want.n_new_tokens
        checked[want.refused] += 1
    assert checked[False] and (checked[True] or with_image)  # the toy probe was fitted on text only


def test_stop_strings_cut_the_answer_in_both_forms(guard, client):
    prompt = next(p for p in BENIGN if not _expected(guard, p, max_new_tokens=12).refused)
    full = _expected(guard, prompt, max_new_tokens=12).text
    stop = full[len(full) // 2:len(full) // 2 + 2]
    assert stop and stop in full
    kw = dict(model=MODEL, messages=_user(prompt), max_tokens=12, stop=[stop])
    got = client.chat.completions.create(**kw)
    assert got.choices[0].message.content == full[:full.find(stop)]
    assert got.choices[0].finish_reason == "stop"
    assert _stream(client, **kw)[:2] == (full[:full.find(stop)], "stop")


def test_seeded_sampling_is_reproducible(client):
    kw = dict(model=MODEL, messages=_user(BENIGN[0]), max_tokens=10, temperature=1.0, top_p=0.9, seed=7)
    a, b = (client.chat.completions.create(**kw).choices[0].message.content for _ in range(2))
    assert a == b


def _post(url, body, headers=None, timeout=60):
    content = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return httpx.post(url + "/v1/chat/completions", content=content,
                      headers={"content-type": "application/json", **(headers or {})}, timeout=timeout)


BAD = {
    "not json": (b"{messages", 400, "not valid JSON"),
    "no messages": ({"model": MODEL, "messages": []}, 400, "'messages'"),
    "corrupt image": ({"model": MODEL, "messages": _user("describe", b"\x89PNG\r\n\x1a\nnot really")}, 400,
                      "messages[0].content[0].image_url: the image data cannot be read"),
    "bad base64": ({"model": MODEL, "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,@@@"}}, {"type": "text", "text": "x"}]}]},
        400, "not valid base64"),
    "audio part": ({"model": MODEL, "messages": [{"role": "user", "content": [{"type": "input_audio"}]}]}, 400,
                   "unsupported content part type 'input_audio'"),
    "remote image": ({"model": MODEL, "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}, {"type": "text", "text": "x"}]}]},
        400, "remote image URLs are not fetched"),
    "assistant turn": ({"model": MODEL, "messages": [{"role": "user", "content": "a"},
                                                     {"role": "assistant", "content": "b"}]}, 400, "role 'assistant'"),
    "empty text": ({"model": MODEL, "messages": [{"role": "user", "content": "   "}]}, 400, "has no text"),
    "n=2": ({"model": MODEL, "messages": _user("hi"), "n": 2}, 400, "'n' must be 1"),
    "too long": ({"model": MODEL, "messages": _user("word " * 5000)}, 400, "context is"),
    "wrong model": ({"model": "gpt-9", "messages": _user("hi")}, 404, "'gpt-9' is not served"),
    "bad temperature": ({"model": MODEL, "messages": _user("hi"), "temperature": "hot"}, 400, "'temperature'"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_gets_an_openai_error_naming_it(server, case):
    body, status, words = BAD[case]
    r = _post(server, body)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert words in err["message"] and set(err) == {"message", "type", "param", "code"}


def test_limits_and_the_api_key(guard):
    small = Limits(max_body_bytes=50_000, max_image_bytes=2_000, max_image_pixels=100 * 100, max_tokens=16)
    app = GuardedServer(guard, ServeConfig(model_name=MODEL, api_key="s3cret", limits=small)).app()
    with BackgroundServer(app) as url:
        assert httpx.get(url + "/health").status_code == 200
        assert httpx.get(url + "/").status_code == 200
        for path in ("/v1/models", "/metrics"):
            assert httpx.get(url + path).status_code == 401
        key = {"authorization": "Bearer s3cret"}
        r = _post(url, {"model": MODEL, "messages": _user("hi")}, headers=key)
        assert r.status_code == 200
        assert _post(url, {"model": MODEL, "messages": _user("hi")}).status_code == 401
        assert httpx.get(url + "/v1/models", headers=key).json()["data"][0]["id"] == MODEL

        def status(body):
            r = _post(url, body, headers=key)
            return r.status_code, r.json()["error"]["message"]

        assert status({"model": MODEL, "messages": _user("x" * 60_000)})[0] == 413
        noisy = Image.frombytes("RGB", (60, 60), random.Random(0).randbytes(60 * 60 * 3))
        buf = io.BytesIO()
        noisy.save(buf, "PNG")
        assert len(buf.getvalue()) > 2_000
        code, msg = status({"model": MODEL, "messages": _user("x", buf.getvalue())})
        assert code == 413 and "larger than 2000 bytes" in msg
        code, msg = status({"model": MODEL, "messages": _user("x", _png(size=(200, 200)))})
        assert code == 413 and "200x200 pixels" in msg
        code, msg = status({"model": MODEL, "messages": _user("hi"), "max_tokens": 17})
        assert code == 400 and "at most 16" in msg


def test_load_every_request_gets_its_own_answer(guard, server):
    """64 requests from 16 threads, safe, flagged and bad mixed: none lost, crossed or spoiled."""
    image = _png("blue")
    threshold = guard.probe.threshold
    prompts = [p for p in HARMFUL + BENIGN  # a score at the threshold (a validation prompt's) flips on batch noise
               if abs(_expected(guard, p, max_new_tokens=1).score - threshold) > 1e-3]
    cases = []
    for i in range(64):
        kind = i % 4
        if kind == 3:
            cases.append(("bad", {"model": MODEL, "messages": _user("look", b"GIF89a-broken")}, None))
            continue
        prompt = prompts[i % len(prompts)] + (" please" if i % 3 else "")
        img = image if kind == 2 else None
        n = 4 + i % 5
        want = _expected(guard, prompt, img, n)
        if abs(want.score - threshold) < 1e-3:
            continue
        cases.append(("ok", {"model": MODEL, "messages": _user(prompt, img), "max_tokens": n}, want))

    def call(case):
        r = _post(server, case[1])
        return r.status_code, r.json()

    before = httpx.get(server + "/metrics").text
    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(call, cases))
    for (kind, body, want), (code, got) in zip(cases, results):
        if kind == "bad":
            assert code == 400 and "cannot be read as an image" in got["error"]["message"]
            continue
        assert code == 200, got
        assert got["choices"][0]["message"]["content"] == want.text, (body, got["sasa"], want.score, want.refused)
        assert got["sasa"]["decision"] == ("refuse" if want.refused else "answer")
    after = httpx.get(server + "/metrics").text
    assert _batches(after) - _batches(before) < 48, "16 concurrent clients were never batched"


def _batches(metrics: str) -> float:
    return next(float(line.split()[-1]) for line in metrics.splitlines() if line.startswith("sasa_batch_size_count"))


def test_full_queue_answers_429_and_the_rest_are_served(guard):
    app = GuardedServer(guard, ServeConfig(model_name=MODEL, max_batch_size=1, max_queue=1)).app()
    prompt = next(p for p in BENIGN if not _expected(guard, p).refused)
    want = _expected(guard, prompt, max_new_tokens=48).text
    with BackgroundServer(app) as url:
        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(lambda _: _post(url, {"model": MODEL, "messages": _user(prompt),
                                                          "max_tokens": 48}), range(8)))
    codes = [r.status_code for r in results]
    assert 429 in codes and 200 in codes and set(codes) <= {200, 429}
    for r in results:
        if r.status_code == 429:
            assert r.json()["error"]["type"] == "rate_limit_error"
        else:
            assert r.json()["choices"][0]["message"]["content"] == want


def test_timeout_and_a_client_leaving_mid_stream_free_the_row(guard):
    vanilla = Guard(guard.adapter, "vanilla")
    app = GuardedServer(vanilla, ServeConfig(model_name=MODEL, timeout_s=1.0, limits=Limits(max_tokens=3000))).app()
    with BackgroundServer(app) as url:
        body = {"model": MODEL, "messages": _user(BENIGN[1]), "max_tokens": 3000}
        with httpx.stream("POST", url + "/v1/chat/completions", json={**body, "stream": True}, timeout=30) as r:
            for line in r.iter_lines():
                if '"content": "' in line and '"content": ""' not in line:
                    break  # leave after the first words
        r = _post(url, body)
        assert r.status_code == 504 and "within 1 s" in r.json()["error"]["message"]
        short = _post(url, {**body, "max_tokens": 3})
        assert short.status_code == 200
        cancelled = next(float(line.split()[-1]) for line in httpx.get(url + "/metrics").text.splitlines()
                         if line.startswith("sasa_cancelled_rows_total"))
        assert cancelled == 2  # the stream that was left and the request that timed out


def _chromium():
    return shutil.which("chromium") or shutil.which("chromium-browser"), shutil.which("chromedriver")


def test_playground_in_a_headless_browser(guard, server, tmp_path):
    browser, driver_path = _chromium()
    if not (browser and driver_path):
        if os.environ.get("SASA_REQUIRE_BROWSER"):
            pytest.fail("chromium and chromedriver are needed (apt-get install chromium chromium-driver)")
        pytest.skip("chromium / chromedriver not installed (apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    image = _png("green")
    path = tmp_path / "page.png"
    path.write_bytes(image)
    opts = webdriver.ChromeOptions()
    opts.binary_location = browser
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        opts.add_argument(flag)
    drv = webdriver.Chrome(service=Service(driver_path), options=opts)
    try:
        for prompt in (BENIGN[0], HARMFUL[0]):
            want = _expected(guard, prompt, image, max_new_tokens=8)
            drv.get(server + "/")
            drv.find_element(By.ID, "image").send_keys(str(path))
            WebDriverWait(drv, 10).until(lambda d: d.find_element(By.ID, "preview").get_attribute("src"))
            drv.find_element(By.ID, "prompt").send_keys(prompt)
            box = drv.find_element(By.ID, "max-tokens")
            box.clear()
            box.send_keys("8")
            drv.find_element(By.ID, "submit").click()
            WebDriverWait(drv, 30).until(lambda d: d.find_element(By.ID, "decision").text)
            assert drv.find_element(By.ID, "decision").text == ("refuse" if want.refused else "answer")
            assert drv.find_element(By.ID, "answer").get_attribute("textContent") == want.text
            assert float(drv.find_element(By.ID, "score").text) == pytest.approx(want.score, abs=1e-3)
    finally:
        drv.quit()


def test_playground_escapes_a_hostile_name_and_checks_its_input(guard, tmp_path):
    """Vanilla mode, a served name that is HTML with a script in it: the page shows the name as text,
    runs none of it, refuses a max-token count that is not a number, and shows no score it lacks."""
    browser, driver_path = _chromium()
    if not (browser and driver_path):
        if os.environ.get("SASA_REQUIRE_BROWSER"):
            pytest.fail("chromium and chromedriver are needed (apt-get install chromium chromium-driver)")
        pytest.skip("chromium / chromedriver not installed (apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    name = ODD_NAMES[0] + ODD_NAMES[1]
    vanilla = Guard(guard.adapter, "vanilla")
    want = vanilla.generate([BENIGN[0]], max_new_tokens=3)[0]
    opts = webdriver.ChromeOptions()
    opts.binary_location = browser
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        opts.add_argument(flag)
    with BackgroundServer(GuardedServer(vanilla, ServeConfig(model_name=name)).app()) as url:
        drv = webdriver.Chrome(service=Service(driver_path), options=opts)
        try:
            drv.get(url + "/")
            assert drv.find_element(By.ID, "model-name").text == name
            assert drv.title != "pwned" and len(drv.find_elements(By.TAG_NAME, "img")) == 1  # the preview only
            drv.find_element(By.ID, "prompt").send_keys(BENIGN[0])
            box = drv.find_element(By.ID, "max-tokens")
            box.clear()
            box.send_keys("abc")
            drv.find_element(By.ID, "submit").click()
            assert "whole number" in drv.find_element(By.ID, "input-error").text
            assert not drv.find_element(By.ID, "result").is_displayed()
            box.clear()
            box.send_keys("3")
            drv.find_element(By.ID, "submit").click()
            WebDriverWait(drv, 30).until(lambda d: d.find_element(By.ID, "decision").text)
            assert drv.find_element(By.ID, "answer").get_attribute("textContent") == want.text
            assert not drv.find_element(By.ID, "scored").is_displayed()  # vanilla scores nothing
            assert drv.find_element(By.ID, "finish").text in ("length", "stop")
        finally:
            drv.quit()


def test_serve_cli_usage_errors():
    from sasa.cli import main

    assert main(["serve", "--model", "nowhere", "--mode", "detect"]) == 2


@pytest.fixture(scope="module")
def tiny_llama_dir(tmp_path_factory):
    from conftest import tiny

    model, tok = tiny("llama")
    path = tmp_path_factory.mktemp("tiny-llama")
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def test_benchmark_runs_both_ways_and_reports_the_ratio(tiny_llama_dir, tmp_path):
    from sasa.serving.loadtest import main

    out = tmp_path / "bench.json"
    assert main(["--model", str(tiny_llama_dir), "--clients", "4", "--per-client", "2", "--max-tokens", "3",
                 "--fit-per-label", "6", "--out", str(out)]) == 0
    figures = json.loads(out.read_text())
    one, many = figures["one at a time"], figures["batched (max 16)"]
    assert one["requests"] == many["requests"] == 8 and figures["throughput_ratio"] > 0
    assert figures["same_answers"] == "8/8"  # batching changes speed, not answers


def test_a_hostile_mix_loses_no_valid_answer_and_gets_only_client_errors(guard):
    """The benchmark's hostile run on the tiny model: every valid answer equals the clean run's, and
    every hostile request is refused with a 4xx (or left by its own client), never a 5xx."""
    from sasa.serving.loadtest import hostile_run

    threshold = guard.probe.threshold  # a score at the threshold (a validation prompt's) flips on batch noise
    prompts = [p for p in BENIGN + HARMFUL if abs(_expected(guard, p, max_new_tokens=1).score - threshold) > 1e-3] * 2
    figures = hostile_run(guard, MODEL, prompts, clients=8, hostile=5, max_tokens=4, max_batch_size=8)
    assert figures["same_answers"] == f"{len(prompts)}/{len(prompts)}"
    kinds = {k.split(": ")[0] for k in figures["hostile_answers"]}
    assert kinds == {"long prompt", "bad stream_options", "corrupt image", "deep JSON", "stream left early"}
    for key in figures["hostile_answers"]:
        name, status = key.split(": ")
        assert status == ("200" if name == "stream left early" else "400"), figures["hostile_answers"]


def test_sasa_serve_command_serves_the_library_answer(tiny_llama_dir, tmp_path):
    """The real command in its own process: a detector directory in, the guard's answer out."""
    import subprocess
    import sys
    import time

    adapter = tiny_adapter("llama")
    samples = ([Sample(f"h{i}", p, label="harmful", source="toy") for i, p in enumerate(HARMFUL)]
               + [Sample(f"b{i}", p, label="benign", source="toy") for i, p in enumerate(BENIGN)])
    probe, _ = fit_probe(SASAEngine(adapter, LayerSelection(2, 4)), samples, target_fpr=0.25, val_fraction=0.25,
                         progress=False, model_name="tiny-llama")
    probe.save_pretrained(tmp_path / "det")
    want = Guard(adapter, "detect", probe).generate([BENIGN[2]], max_new_tokens=6)[0]
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "sasa.cli", "serve", "--model", str(tiny_llama_dir), "--detector",
                             str(tmp_path / "det"), "--port", str(port), "--served-model-name", "t"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(600):
            try:
                if httpx.get(url + "/health").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
            assert proc.poll() is None, proc.stdout.read()
        got = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0).chat.completions.create(
            model="t", messages=_user(BENIGN[2]), max_tokens=6)
        assert got.choices[0].message.content == want.text
        assert got.model_extra["sasa"]["decision"] == ("refuse" if want.refused else "answer")
    finally:
        proc.terminate()
        proc.wait(timeout=30)


# --- hardening: limits before work, no leaked jobs, no 5xx from bad input, a page that escapes ---------

def test_a_long_prompt_is_refused_before_tokenizing_and_admission_never_waits_on_the_decoder(guard):
    gs = GuardedServer(guard, ServeConfig(model_name=MODEL))
    assert gs.limits.max_prompt_chars is not None and gs.limits.max_prompt_chars >= gs.context
    with BackgroundServer(gs.app()) as url:
        r = _post(url, {"model": MODEL, "messages": _user("x" * (gs.limits.max_prompt_chars + 1))})
        assert r.status_code == 400 and "characters of text" in r.json()["error"]["message"]
        assert r.json()["error"]["code"] == "context_length_exceeded"
        # the worker holds its tokenizer (decoding); admission still tokenizes a request on its own copy
        with gs.batcher.tokenizer_lock:
            r = _post(url, {"model": MODEL, "messages": _user("word " * 5000)}, timeout=20)
        assert r.status_code == 400 and "context is" in r.json()["error"]["message"]


def test_a_full_queue_is_answered_before_the_body_is_parsed(guard):
    gs = GuardedServer(guard, ServeConfig(model_name=MODEL, max_queue=1))
    with BackgroundServer(gs.app()) as url:
        with gs.batcher._cond:  # a waiting job that the worker cannot take while the condition is held
            gs.batcher._pending.append(object.__new__(type("Placeholder", (), {})))
            r = _post(url, b"{not even json")
            gs.batcher._pending.clear()
        assert r.status_code == 429 and r.json()["error"]["code"] == "queue_full"


def _cancelled_rows(url):
    return next(float(line.split()[-1]) for line in httpx.get(url + "/metrics").text.splitlines()
                if line.startswith("sasa_cancelled_rows_total"))


@pytest.mark.parametrize("options", ["yes", ["include_usage"], {"include_usage": "yes"}])
def test_bad_stream_options_are_refused_not_leaked(server, options):
    r = _post(server, {"model": MODEL, "messages": _user(BENIGN[0]), "stream": True, "stream_options": options})
    assert r.status_code == 400 and r.json()["error"]["param"].startswith("stream_options")


def test_a_stream_whose_client_is_gone_before_the_first_byte_cancels_its_job():
    import asyncio

    from sasa.serving.app import CancelOnExit
    from sasa.serving.batching import Job
    from sasa.serving.protocol import ChatRequest

    async def body():
        yield "data: never sent\n\n"

    async def gone(message):
        raise OSError("the client closed the connection")

    async def receive():
        return {"type": "http.disconnect"}

    async def run():
        job = Job(ChatRequest(prompt="p", stream=True), 1, 4, asyncio.get_running_loop())
        from starlette.requests import ClientDisconnect

        with pytest.raises((OSError, ClientDisconnect)):
            await CancelOnExit(job, body(), media_type="text/event-stream")(
                {"type": "http", "asgi": {"spec_version": "2.4"}}, receive, gone)
        return job.cancelled.is_set()

    assert asyncio.run(run())


def test_usage_is_streamed_when_asked(client):
    chunks = list(client.chat.completions.create(model=MODEL, messages=_user(BENIGN[0]), max_tokens=3, stream=True,
                                                 stream_options={"include_usage": True}))
    assert chunks[-1].usage is not None and chunks[-1].usage.prompt_tokens > 0


HOSTILE = {
    "seed past 64 bits": ({"model": MODEL, "messages": _user("hi"), "seed": 2 ** 70}, "'seed' must be between"),
    "seed of 4 400 digits": ('{"model": "%s", "messages": [{"role": "user", "content": "hi"}], "seed": %s}'
                             % (MODEL, "9" * 4400), "cannot be read"),
    "JSON 100 000 deep": ("[" * 100_000 + "]" * 100_000, "nests deeper"),
    "JSON 40 deep": ({"model": MODEL, "messages": _user("hi"), "metadata": json.loads("[" * 40 + "]" * 40)},
                     "nests deeper"),
    "temperature 10**400": ('{"model": "%s", "messages": [{"role": "user", "content": "hi"}], "temperature": 1%s}'
                            % (MODEL, "0" * 400), "'temperature' must be between"),
    "tools": ({"model": MODEL, "messages": _user("hi"), "tools": [{"type": "function", "function": {"name": "f"}}]},
              "'tools' is not supported"),
    "tool_choice": ({"model": MODEL, "messages": _user("hi"), "tool_choice": "required"}, "'tool_choice'"),
    "response_format": ({"model": MODEL, "messages": _user("hi"), "response_format": {"type": "json_object"}},
                        "'response_format' is not supported"),
    "logprobs": ({"model": MODEL, "messages": _user("hi"), "logprobs": True}, "'logprobs' is not supported"),
    "image in the system message": ({"model": MODEL, "messages": [
        {"role": "system", "content": [{"type": "image_url", "image_url": {"url": _data_url(_png())}}]},
        {"role": "user", "content": "hi"}]}, "images are taken in the user message only"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_input_gets_a_400_in_openai_shape(server, case):
    body, words = HOSTILE[case]
    r = _post(server, body)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert words in err["message"] and set(err) == {"message", "type", "param", "code"}


def test_harmless_defaults_of_unsupported_fields_are_accepted(server):
    r = _post(server, {"model": MODEL, "messages": _user(BENIGN[0]), "max_tokens": 2, "tools": [],
                       "tool_choice": "none", "response_format": {"type": "text"}, "logprobs": False})
    assert r.status_code == 200, r.text


def test_an_unreadable_image_is_described_in_words(server):
    r = _post(server, {"model": MODEL, "messages": _user("look", b"GIF89a-broken")})
    message = r.json()["error"]["message"]
    assert r.status_code == 400 and "not a known image format" in message and "0x" not in message


def test_without_a_key_only_json_and_this_host_are_served(server):
    ok = {"model": MODEL, "messages": _user(BENIGN[0]), "max_tokens": 1}
    r = httpx.post(server + "/v1/chat/completions", content=json.dumps(ok), headers={"content-type": "text/plain"})
    assert r.status_code == 415 and r.json()["error"]["code"] == "unsupported_media_type"
    for host in ("evil.example", "evil.example:" + server.rsplit(":", 1)[1], "127.0.0.1:1"):
        r = _post(server, ok, headers={"host": host})
        assert r.status_code == 403 and r.json()["error"]["code"] == "host_not_allowed", host
        assert httpx.get(server + "/", headers={"host": host}).status_code == 403
    assert _post(server, ok, headers={"host": "localhost:" + server.rsplit(":", 1)[1]}).status_code == 200


def test_allowed_hosts_and_an_api_key_lift_the_host_check(guard):
    for config in (ServeConfig(model_name=MODEL, allowed_hosts=("sasa.lan",)),
                   ServeConfig(model_name=MODEL, api_key="k")):
        with BackgroundServer(GuardedServer(guard, config).app()) as url:
            r = _post(url, {"model": MODEL, "messages": _user(BENIGN[0]), "max_tokens": 1},
                      headers={"host": "sasa.lan", "authorization": "Bearer k"})
            assert r.status_code == 200


@pytest.mark.parametrize("path", ["/", "/health", "/v1/models", "/metrics", "/nowhere"])
def test_security_headers_on_every_response(server, path):
    r = httpx.get(server + path)
    assert r.headers["x-content-type-options"] == "nosniff" and r.headers["x-frame-options"] == "DENY"
    assert "frame-ancestors 'none'" in r.headers["content-security-policy"]


def test_security_headers_on_a_stream(server):
    with httpx.stream("POST", server + "/v1/chat/completions", timeout=60,
                      json={"model": MODEL, "messages": _user(BENIGN[0]), "max_tokens": 2, "stream": True}) as r:
        assert r.headers["x-content-type-options"] == "nosniff"
        list(r.iter_lines())


ODD_NAMES = ['<img src=x onerror="document.title=\'pwned\'">', "C:\\users\\me\\llava", "it's \"quoted\" </script>"]


@pytest.mark.parametrize("name", ODD_NAMES)
def test_the_page_escapes_the_served_name(guard, name):
    import html

    page = GuardedServer(guard, ServeConfig(model_name=name)).playground_page()
    if html.escape(name) != name:
        assert name not in page  # only its escaped form
    script = page[page.index("<script>"):]
    assert name not in script and html.escape(name) not in script  # the script reads it from the page
    assert html_unescape_attr(page, "data-model") == name


def html_unescape_attr(page: str, attr: str) -> str:
    import html
    import re

    return html.unescape(re.search(attr + r'="([^"]*)"', page).group(1))


def test_a_text_only_detector_in_front_of_a_vision_model_is_stated(guard, caplog):
    assert guard.probe.metadata["data"]["n_with_image"] == 0  # the toy probe was fitted on text
    gs = GuardedServer(guard, ServeConfig(model_name=MODEL))
    assert "fitted on text prompts only" in gs.detector_note
    assert "fitted on text prompts only" in gs.playground_page()
    with BackgroundServer(gs.app()) as url:
        assert "fitted on text prompts only" in httpx.get(url + "/v1/models").json()["data"][0]["sasa"][
            "detector_warning"]
    text_only = Guard(tiny_adapter("llama"), "vanilla")
    assert GuardedServer(text_only, ServeConfig(model_name=MODEL)).detector_note is None


# --- fuzzing: generated bodies never get a 5xx, always OpenAI's error shape, and the server lives on ----

@pytest.fixture(scope="module")
def fuzz_server(guard):
    config = ServeConfig(model_name=MODEL, limits=Limits(max_tokens=2, max_body_bytes=200_000))
    with BackgroundServer(GuardedServer(guard, config).app()) as url:
        yield url


def _check_answer(r):
    assert r.status_code < 500, (r.status_code, r.text[:300])
    body = r.json()
    if r.status_code == 200:
        assert body["object"] == "chat.completion" and isinstance(body["choices"][0]["message"]["content"], str)
    else:
        assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
        assert isinstance(body["error"]["message"], str) and body["error"]["message"]


def _fuzz_strategies():
    from hypothesis import strategies as st

    big = st.integers(min_value=2 ** 62, max_value=2 ** 80) | st.integers(min_value=-(2 ** 80), max_value=-(2 ** 62))
    scalars = (st.none() | st.booleans() | st.integers() | big | st.floats(allow_nan=False)
               | st.text(max_size=20))
    json_values = st.recursive(scalars, lambda kids: st.lists(kids, max_size=4)
                               | st.dictionaries(st.text(max_size=8), kids, max_size=4), max_leaves=12)
    image = st.sampled_from([_data_url(_png()), _data_url(b"GIF89a-broken"), "data:image/png;base64,@@",
                             "data:,x", "https://example.com/a.png", "file:///etc/passwd", ""])
    part = (st.fixed_dictionaries({"type": st.just("text"), "text": st.text(max_size=40) | json_values})
            | st.fixed_dictionaries({"type": st.just("image_url"),
                                     "image_url": st.fixed_dictionaries({"url": image}) | json_values})
            | json_values)
    content = st.text(max_size=60) | st.lists(part, max_size=3) | json_values
    role = st.sampled_from(["user", "system", "developer", "assistant", "tool", ""]) | json_values
    message = st.fixed_dictionaries({"role": role, "content": content}) | json_values
    fields = {"model": st.sampled_from([MODEL, "other"]) | json_values, "max_tokens": st.integers(-3, 6) | json_values,
              "temperature": st.floats(-1, 3) | json_values, "top_p": st.floats(-1, 2) | json_values,
              "seed": st.integers() | json_values, "stream": st.booleans() | json_values,
              "stop": st.text(max_size=3) | st.lists(st.text(max_size=3), max_size=5) | json_values,
              "n": st.integers(-1, 3) | json_values, "stream_options": json_values, "tools": json_values,
              "response_format": json_values, "logprobs": json_values}
    body = st.fixed_dictionaries({"messages": st.lists(message, min_size=0, max_size=3)},
                                 optional={k: v for k, v in fields.items()})
    return body, json_values


def test_fuzzed_requests_never_get_a_server_error(fuzz_server):
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    body, json_values = _fuzz_strategies()
    fuzz = settings(max_examples=150, deadline=None, derandomize=True, database=None,
                    suppress_health_check=list(HealthCheck))

    @fuzz
    @given(body)
    def schema(b):
        r = _post(fuzz_server, b, timeout=30)
        if b.get("stream") is True and r.status_code == 200:  # a stream must end in order, not break off
            assert r.headers["content-type"].startswith("text/event-stream")
            assert r.text.endswith("data: [DONE]\n\n") or '"error"' in r.text.splitlines()[-2], r.text[-300:]
            return
        _check_answer(r)

    nested = st.integers(1, 100_000).map(lambda d: "[" * d + "]" * d)
    long_number = st.integers(1, 6000).map(lambda n: '{"messages": [{"role": "user", "content": "hi"}], "seed": '
                                                     + "7" * n + "}")

    @fuzz
    @given(st.binary(max_size=400) | json_values.map(json.dumps) | nested | long_number)
    def raw(data):
        _check_answer(_post(fuzz_server, data, timeout=30))

    schema()
    raw()
    ok = _post(fuzz_server, {"model": MODEL, "messages": _user(BENIGN[0]), "max_tokens": 2})
    assert ok.status_code == 200 and ok.json()["choices"][0]["message"]["content"] is not None
