"""KServe V2 (Open Inference Protocol) conformance, checked with Triton's own HTTP client."""

from __future__ import annotations

import httpx
import numpy as np
import pytest

from conftest import API_KEY, MODEL  # noqa: F401  (tests/serve/conftest.py is on sys.path)

tc = pytest.importorskip("tritonclient.http", reason="tritonclient[http] is a test extra: pip install 'tritonclient[http]'")
from tritonclient.utils import InferenceServerException  # noqa: E402

AUTH = {"Authorization": f"Bearer {API_KEY}"}  # pass copies to tritonclient: it adds headers to the dict


@pytest.fixture
def triton(server):
    client = tc.InferenceServerClient(server.url.removeprefix("http://"), network_timeout=30)
    yield client
    client.close()


def _text_input(texts: list[str], binary: bool) -> "tc.InferInput":
    inp = tc.InferInput("text_input", [len(texts)], "BYTES")
    inp.set_data_from_numpy(np.array([t.encode() for t in texts], dtype=np.object_), binary_data=binary)
    return inp


def test_health_and_metadata_with_triton_client(triton):
    assert triton.is_server_live()
    assert triton.is_server_ready()
    meta = triton.get_server_metadata()
    assert meta["name"] == "lmsmith" and "version" in meta
    assert triton.is_model_ready(MODEL)
    assert triton.is_model_ready(MODEL, "1")
    assert not triton.is_model_ready(MODEL, "7")
    assert not triton.is_model_ready("nope")
    md = triton.get_model_metadata(MODEL)
    assert md["name"] == MODEL and md["inputs"][0] == {"name": "text_input", "datatype": "BYTES", "shape": [-1]}
    assert md["outputs"][0]["name"] == "text_output"
    with pytest.raises(InferenceServerException, match="unknown model"):
        triton.get_model_metadata("nope")


@pytest.mark.parametrize("binary", [True, False])
def test_infer_with_triton_client(triton, binary):
    out = tc.InferRequestedOutput("text_output", binary_data=binary)
    res = triton.infer(MODEL, [_text_input(["Hello", "Ahoj"], binary)], outputs=[out], request_id="req-7",
                       headers=dict(AUTH), parameters={"max_tokens": 5, "temperature": 0.0, "seed": 1})
    texts = [t.decode() if isinstance(t, bytes) else t for t in res.as_numpy("text_output").tolist()]
    assert len(texts) == 2 and all(texts)
    r = res.get_response()
    assert r["id"] == "req-7" and r["model_name"] == MODEL
    assert r["outputs"][0]["shape"] == [2]
    assert r["parameters"]["completion_tokens"] >= 2


def test_infer_errors_are_v2_shaped(server, triton):
    url = f"{server.url}/v2/models/{MODEL}/infer"
    ok = {"id": "a1", "inputs": [{"name": "text_input", "shape": [1], "datatype": "BYTES", "data": ["Hi"]}],
          "parameters": {"max_tokens": 3}}
    r = httpx.post(url, json=ok, headers=AUTH)
    assert r.status_code == 200 and r.json()["id"] == "a1" and r.json()["outputs"][0]["data"][0]
    bad = [
        ({"inputs": [{"name": "text_input", "shape": [2], "datatype": "BYTES", "data": ["Hi"]}]}, "shape"),
        ({"inputs": [{"name": "text_input", "shape": [1], "datatype": "FP32", "data": [1.0]}]}, "datatype"),
        ({"inputs": [{"name": "prompt", "shape": [1], "datatype": "BYTES", "data": ["Hi"]}]}, "unknown input"),
        ({"inputs": [{"name": "text_input", "shape": [1], "datatype": "BYTES", "data": [3]}]}, "strings"),
        ({"inputs": []}, "inputs"),
        ({**ok, "parameters": {"max_tokens": "many"}}, "max_tokens"),
        ({**ok, "parameters": {"temperature": -1.0}}, "temperature"),
        ({**ok, "outputs": [{"name": "logits"}]}, "unknown output"),
        ({**ok, "parameters": {"user": 5}}, "user"),
    ]
    for body, word in bad:
        r = httpx.post(url, json=body, headers=AUTH)
        assert r.status_code == 400, (body, r.text)
        assert set(r.json()) == {"error"} and word in r.json()["error"], r.json()
    r = httpx.post(url, content=b"{not json", headers=AUTH)
    assert r.status_code == 400 and "JSON" in r.json()["error"]
    r = httpx.post(f"{server.url}/v2/models/nope/infer", json=ok, headers=AUTH)
    assert r.status_code == 404 and set(r.json()) == {"error"}
    r = httpx.post(url, json=ok)  # the API key guards inference, not health
    assert r.status_code == 401
    assert httpx.get(f"{server.url}/v2/health/live").status_code == 200
    with pytest.raises(InferenceServerException):
        triton.infer(MODEL, [_text_input(["Hi", "there"], False)], headers=dict(AUTH), parameters={"max_tokens": 0})


def test_infer_shape_n_by_1_and_stop(server):
    body = {"inputs": [{"name": "text_input", "shape": [2, 1], "datatype": "BYTES", "data": [["Hello"], ["Hi"]]}],
            "parameters": {"max_tokens": 20, "stop": ["capital"]}}
    r = httpx.post(f"{server.url}/v2/models/{MODEL}/versions/1/infer", json=body, headers=AUTH)
    assert r.status_code == 200, r.text
    out = r.json()["outputs"][0]
    assert out["shape"] == [2] and all("capital" not in t for t in out["data"])
    assert r.json()["model_version"] == "1"
