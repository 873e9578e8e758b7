"""The classification service over real HTTP: uvicorn on a free loopback port (a thread, or a subprocess for
SIGTERM), httpx as the client."""
import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nanogpt.serve.batcher import MicroBatcher
from nanogpt.serve.predict import Classifier
from nanogpt.serve.service import Limits, create_app, load_models

REVIEWS = ["A wonderful film, moving and funny.", "Dreadful. Two hours I will never get back.",
           "The plot was thin but the actors carried it; I smiled more than I expected to. " * 6,
           "Not bad.", "Worst sequel ever made, and I have seen many sequels. " * 20, "Quietly brilliant."]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerThread:
    """uvicorn serving `app` on a free loopback port in a thread, for the length of a `with` block."""

    def __init__(self, app):
        import uvicorn

        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.url = f"http://127.0.0.1:{self.port}"

    def __enter__(self):
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.time() + 60
        while not self.server.started:
            assert self.thread.is_alive() and time.time() < deadline, "the server did not start"
            time.sleep(0.05)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(30)


@pytest.fixture(scope="module")
def checkpoints(tiny_run):
    return {loss: str(r.checkpoint) for loss, r in tiny_run.items()}


@pytest.fixture(scope="module")
def server(checkpoints):
    models = load_models([checkpoints["ce"], checkpoints["bce"]])
    limits = Limits(max_texts=16, max_chars=5000, max_body_bytes=100_000, max_batch=32, max_wait_ms=20)
    with ServerThread(create_app(models, limits)) as srv:
        yield srv


def post(url, body, **kw):
    return httpx.post(f"{url}/v1/classify", json=body, timeout=30, **kw)


def test_answers_are_classifier_predict_and_models_are_described(server, checkpoints):
    assert httpx.get(f"{server.url}/healthz").json() == {"status": "alive"}
    assert httpx.get(f"{server.url}/readyz").json() == {"status": "ready", "models": ["ce", "bce"]}
    for name in ("ce", "bce"):
        r = post(server.url, {"texts": REVIEWS, "model": name})
        assert r.status_code == 200 and r.json()["model"] == name
        expected = Classifier.load(checkpoints[name]).predict(REVIEWS)
        got = r.json()["results"]
        # the same texts may share a forward pass with others: batch shapes differ, so agreement is to float
        # rounding (right padding under causal attention never reaches a real token)
        np.testing.assert_allclose([g["positive_probability"] for g in got], expected.probabilities, atol=1e-6)
        assert [g["label"] for g in got] == expected.labels.tolist()
    assert post(server.url, {"texts": ["fine"]}).json()["model"] == "ce"  # the default: the first checkpoint
    models = httpx.get(f"{server.url}/v1/models").json()
    assert models["default"] == "ce" and [m["name"] for m in models["models"]] == ["ce", "bce"]
    for m in models["models"]:
        assert m["ready"] and m["loss"] == m["name"] and m["run_id"].startswith(f"test-{m['loss']}-seed0-")
        assert 0 <= m["val_accuracy"] <= 1 and m["ece"] is not None and m["torch_version"]
    assert httpx.get(f"{server.url}/openapi.json").json()["info"]["title"].startswith("nanogpt")


def test_concurrent_clients_each_get_their_own_answers(server, checkpoints):
    expected = {name: Classifier.load(checkpoints[name]).predict(REVIEWS).probabilities for name in ("ce", "bce")}
    rng = np.random.default_rng(0)
    jobs = [(["ce", "bce"][i % 2], rng.choice(len(REVIEWS), size=rng.integers(1, 4)).tolist()) for i in range(200)]
    before = _metric(server.url, "nanogpt_batch_requests_count")

    def call(job):
        name, idx = job
        with httpx.Client(timeout=60) as client:
            r = client.post(f"{server.url}/v1/classify", json={"texts": [REVIEWS[i] for i in idx], "model": name})
        assert r.status_code == 200, r.text
        return [g["positive_probability"] for g in r.json()["results"]]

    with ThreadPoolExecutor(32) as pool:
        answers = list(pool.map(call, jobs))
    for (name, idx), got in zip(jobs, answers):
        np.testing.assert_allclose(got, expected[name][idx], atol=1e-6)
    passes = _metric(server.url, "nanogpt_batch_requests_count") - before
    assert 0 < passes < 200  # requests were merged: fewer forward passes than requests


def _metric(url, name) -> float:
    text = httpx.get(f"{url}/metrics").text
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name))


@pytest.mark.parametrize("body, status, field", [
    ({"texts": []}, 422, "texts"), ({"texts": "a review"}, 422, "texts"), ({"texts": [3]}, 422, "texts.0"),
    ({"texts": ["ok", None]}, 422, "texts.1"), ({"texts": ["  "]}, 422, "texts.0"), ({}, 422, "texts"),
    ({"texts": ["ok"], "extra": 1}, 422, "extra"), ({"texts": ["ok"], "model": "gpt-5"}, 404, "model"),
    ({"texts": ["ok"], "model": "/etc/passwd"}, 404, "model"), ({"texts": ["a"] * 17}, 422, "texts"),
    ({"texts": ["ok", "x" * 5001]}, 422, "texts.1"), ([1, 2], 422, "body"), (None, 422, "body"),
])
def test_bad_input_is_a_4xx_naming_the_field(server, body, status, field):
    r = post(server.url, body)
    assert r.status_code == status, r.text
    assert r.json()["field"] == field and r.json()["error"]


def test_malformed_json_and_oversized_bodies(server):
    r = httpx.post(f"{server.url}/v1/classify", content=b'{"texts": ["a"', headers={"content-type": "application/json"})
    assert r.status_code == 422 and "invalid JSON" in r.json()["error"]
    r = httpx.post(f"{server.url}/v1/classify", content=b'{"texts": ["good"]}', headers={"content-type": "text/plain"})
    assert r.status_code == 422 and "Content-Type: application/json" in r.json()["error"]
    big = json.dumps({"texts": ["x" * 120_000]}).encode()
    r = httpx.post(f"{server.url}/v1/classify", content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.json()["limit"] == 100_000  # by Content-Length, before reading the body
    chunks = (big[i : i + 8192] for i in range(0, len(big), 8192))  # no Content-Length: counted as it streams
    r = httpx.post(f"{server.url}/v1/classify", content=chunks, headers={"content-type": "application/json"})
    assert r.status_code == 413
    assert post(server.url, {"texts": ["still serving"]}).status_code == 200


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
                           lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(), inner, max_size=5),
                           max_leaves=20)
bodies = json_values | st.fixed_dictionaries({"texts": json_values}, optional={"model": json_values})


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=bodies)
def test_no_json_body_gets_a_5xx(server, body):
    r = httpx.post(f"{server.url}/v1/classify", content=json.dumps(body).encode(),
                   headers={"content-type": "application/json"}, timeout=30)
    assert r.status_code < 500, (body, r.text)
    assert r.status_code == 200 or "error" in r.json()


def test_api_key_is_required_and_never_logged(checkpoints, caplog):
    key = "s3cret-key-for-tests-only"
    caplog.set_level("DEBUG")
    with ServerThread(create_app(load_models([checkpoints["bce"]]), api_key=key)) as srv:
        assert post(srv.url, {"texts": ["good"]}).status_code == 401
        assert post(srv.url, {"texts": ["good"]}, headers={"X-API-Key": "wrong"}).status_code == 401
        assert httpx.get(f"{srv.url}/metrics").status_code == 401
        assert post(srv.url, {"texts": ["good"]}, headers={"X-API-Key": key}).status_code == 200
        assert post(srv.url, {"texts": ["good"]}, headers={"Authorization": f"Bearer {key}"}).status_code == 200
        assert httpx.get(f"{srv.url}/healthz").status_code == 200  # probes need no key
    assert key not in caplog.text


def test_a_failing_prediction_fails_only_its_request(checkpoints, caplog):
    models = load_models([checkpoints["ce"]])
    clf = models["ce"].classifier
    real = clf.predict
    calls = []

    def predict(texts, batch_size=64):
        calls.append(sorted(texts))
        if any("BOOM" in t for t in texts):
            raise RuntimeError("the model fell over")
        return real(texts, batch_size)

    clf.predict = predict
    with ServerThread(create_app(models, Limits(max_wait_ms=1000))) as srv:
        with ThreadPoolExecutor(2) as pool:  # both land in one batch (1 s window): only BOOM fails
            bad, good = pool.map(lambda t: post(srv.url, {"texts": [t]}), ["BOOM", "A fine film."])
        # the merged pass failed, then each request ran alone: the isolation path itself, not two lone requests
        ours = [c for c in calls if set(c) & {"BOOM", "A fine film."}]  # not the service's warm-up pass
        assert ours[0] == ["A fine film.", "BOOM"] and sorted(ours[1:]) == [["A fine film."], ["BOOM"]]
        assert bad.status_code == 500 and bad.json()["error"] == "prediction failed"
        assert bad.json()["error_id"] in caplog.text and "the model fell over" in caplog.text
        assert good.status_code == 200
        assert post(srv.url, {"texts": ["Still here?"]}).status_code == 200
        assert _metric(srv.url, "nanogpt_prediction_errors_total") == 1


def test_micro_batcher_respects_the_batch_size_and_answers_in_order():
    calls = []

    def predict(texts):
        calls.append(len(texts))
        return np.array([float(len(t)) for t in texts])

    async def scenario():
        with ThreadPoolExecutor(1) as pool:
            batcher = MicroBatcher(predict, pool, max_batch=4, max_wait_s=0.05)
            batcher.start()
            requests = [["a"], ["bb", "ccc"], ["dddd", "e"], ["ffffff"] * 6, ["g"]]
            answers = await asyncio.gather(*(batcher.submit(r) for r in requests))
            await batcher.stop()
            return requests, answers

    requests, answers = asyncio.run(scenario())
    for r, a in zip(requests, answers):
        assert a.tolist() == [float(len(t)) for t in r]
    assert calls[0] == 3 and 6 in calls and all(c <= 4 or c == 6 for c in calls)  # 6 > max_batch: alone


@pytest.mark.slow
def test_sigterm_answers_in_flight_requests_then_exits(checkpoints):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "nanogpt", "serve", "--checkpoint", checkpoints["ce"], "--port",
                             str(port), "--max-wait-ms", "5000", "--log-level", "warning"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            assert proc.poll() is None, proc.stdout.read()
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.time() < deadline, "the service did not become ready"
            time.sleep(0.2)
        with ThreadPoolExecutor(1) as pool:
            pending = pool.submit(lambda: (post(url, {"texts": ["A fine film."]}), time.monotonic()))
            # the service says when the request waits in the batcher's window (no guessed sleep)
            while not re.search(r"^nanogpt_classify_in_flight\{model=\"[^\"]+\"\} 1\.0$",
                                httpx.get(f"{url}/metrics").text, re.M):
                assert time.time() < deadline and not pending.done(), "the request never reached the batcher"
                time.sleep(0.05)
            signalled = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            answer, answered = pending.result(timeout=30)
        assert answer.status_code == 200 and len(answer.json()["results"]) == 1
        assert answered > signalled  # it was in flight when the signal came, and answered after it
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)


def test_models_are_named_and_the_command_line_is_checked(checkpoints, tmp_path, capsys, monkeypatch):
    from nanogpt.__main__ import main

    models = load_models([checkpoints["ce"], checkpoints["ce"], f"calm=={checkpoints['bce']}".replace("==", "=")])
    assert list(models) == ["ce", "ce-2", "calm"] and models["calm"].classifier.loss == "bce"
    with pytest.raises(ValueError, match="two checkpoints are named 'x'"):
        load_models([f"x={checkpoints['ce']}", f"x={checkpoints['bce']}"])
    monkeypatch.delenv("NANOGPT_TEST_KEY", raising=False)
    for args, code, text in [
        (["serve", "--checkpoint", str(tmp_path / "missing.pt")], 1, "missing.pt"),
        (["serve", "--checkpoint", checkpoints["ce"], "--api-key-env", "NANOGPT_TEST_KEY"], 2, "unset or empty"),
        (["serve", "--checkpoint", checkpoints["ce"], "--max-batch", "0"], 2, "max_batch must be >= 1"),
        (["serve", "--checkpoint", checkpoints["ce"], "--port", "70000"], 2, "--port 70000"),
    ]:
        assert main(args) == code
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and text in err[0], err


def test_a_model_warming_up_answers_503_and_readyz_names_it(checkpoints):
    models = load_models([checkpoints["ce"], checkpoints["bce"]])
    with ServerThread(create_app(models)) as srv:
        assert httpx.get(f"{srv.url}/readyz", timeout=30).status_code == 200
        models["bce"].ready = False  # what a model is until its warm-up pass has run
        r = post(srv.url, {"texts": ["A fine film."], "model": "bce"})
        assert r.status_code == 503 and r.json()["error"] == "model 'bce' is not ready yet"
        ready = httpx.get(f"{srv.url}/readyz", timeout=30)
        assert ready.status_code == 503 and ready.json()["waiting_for"] == ["bce"]
        assert httpx.get(f"{srv.url}/healthz", timeout=30).status_code == 200  # alive, only not ready
        assert post(srv.url, {"texts": ["A fine film."]}).status_code == 200  # the default (ce) is ready
        models["bce"].ready = True
        assert post(srv.url, {"texts": ["A fine film."], "model": "bce"}).status_code == 200


def test_the_default_model_and_model_names_are_checked(checkpoints, capsys):
    from nanogpt.__main__ import main

    models = load_models([checkpoints["ce"]])
    with pytest.raises(ValueError, match=r"default model 'bce' is not loaded; loaded: \['ce'\]"):
        create_app(models, default="bce")
    assert main(["serve", "--checkpoint", checkpoints["ce"], "--default", "nope"]) == 1
    assert "default model 'nope' is not loaded" in capsys.readouterr().err
    for bad in ("a b", "caf\u00e9!", "x;rm", "<m>"):
        with pytest.raises(ValueError, match="use letters, digits"):
            load_models([f"{bad}={checkpoints['ce']}"])
    named = load_models([f"v1.2_calm-B={checkpoints['ce']}"])
    assert list(named) == ["v1.2_calm-B"]
    spelled_as_path = load_models([checkpoints["ce"].replace("/model.pt", "/./model.pt")])
    assert list(spelled_as_path) == ["ce"]  # a path with '=' nowhere is a path, not a name


def test_limits_refuse_a_body_cap_below_what_the_schema_allows():
    smallest = 4 * (100 + 4) + 64  # the largest ASCII request the schema allows, in bytes
    assert Limits(max_texts=4, max_chars=100, max_body_bytes=smallest).max_body_bytes == smallest
    with pytest.raises(ValueError, match=rf"cannot hold 4 texts of 100 characters.*at least {smallest}"):
        Limits(max_texts=4, max_chars=100, max_body_bytes=smallest - 1)
    for name in ("max_texts", "max_chars", "max_body_bytes", "max_batch"):
        with pytest.raises(ValueError, match=f"{name} must be >= 1"):
            Limits(**{name: 0})
    with pytest.raises(ValueError, match="max_wait_ms must be >= 0"):
        Limits(max_wait_ms=-1)


def test_the_openapi_document_states_what_the_service_enforces(server):
    """/openapi.json carries the limits the service was started with, every error response with its body, and
    /metrics' content type; requests drawn from the schema alone are all answered 200, and what it calls blank
    is exactly what the service refuses as empty."""
    import re

    from nanogpt.serve.contract import NOT_BLANK, is_blank

    doc = httpx.get(f"{server.url}/openapi.json", timeout=30).json()
    request = doc["components"]["schemas"]["ClassifyRequest"]
    texts = request["properties"]["texts"]
    assert (texts["minItems"], texts["maxItems"]) == (1, 16)
    assert (texts["items"]["minLength"], texts["items"]["maxLength"], texts["items"]["pattern"]) == (1, 5000, NOT_BLANK)
    assert request["x-max-body-bytes"] == 100_000
    loaded = httpx.get(f"{server.url}/v1/models", timeout=30).json()["models"]
    assert sorted(request["properties"]["model"]["anyOf"][0]["enum"]) == sorted(m["name"] for m in loaded)
    responses = doc["paths"]["/v1/classify"]["post"]["responses"]
    assert {"200", "404", "413", "422", "500", "503"} <= set(responses)
    for code in ("404", "413", "422"):
        assert responses[code]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}
    assert doc["components"]["schemas"]["Error"]["required"] == ["error"]
    metrics = doc["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    assert list(metrics) == [httpx.get(f"{server.url}/metrics", timeout=30).headers["content-type"]]
    for c in range(0x110000):  # the pattern and the service agree on every single character
        ch = chr(c)
        if 0xD800 <= c <= 0xDFFF:
            continue
        assert is_blank(ch * 2) == (not (ch * 2).strip()) == (re.search(NOT_BLANK, ch * 2) is None), hex(c)
    # too many, one character too long, blank, not UTF-8: each a schema violation, 422, with the Error body; 413
    # is the body cap's alone; every status the service answers is one the document lists
    for body in ({"texts": ["good"] * 17}, {"texts": ["x" * 5001]}, {"texts": ["\u2003\x1c"]}):
        r = post(server.url, body)
        assert r.status_code == 422 and set(r.json()) <= set(doc["components"]["schemas"]["Error"]["properties"])
    assert post(server.url, {"texts": ["x" * 5000]}).status_code == 200  # the limit itself is allowed
    for raw in (b"\x80abc", b'{"texts": ["\xc3"]}'):
        r = httpx.post(f"{server.url}/v1/classify", content=raw, headers={"content-type": "application/json"})
        assert r.status_code == 422 and r.json()["field"] == "body" and "UTF-8" in r.json()["error"], r.text
    assert "400" not in responses


schema_texts = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=60).filter(
    lambda t: bool(t.strip()))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(texts=st.lists(schema_texts, min_size=1, max_size=16), model=st.sampled_from([None, "ce", "bce"]))
def test_every_request_the_schema_calls_valid_is_answered(server, texts, model):
    body = {"texts": texts} if model is None else {"texts": texts, "model": model}
    r = post(server.url, body)
    assert r.status_code == 200, (r.status_code, r.text[:300])
    assert len(r.json()["results"]) == len(texts)
