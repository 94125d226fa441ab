"""Every error is OpenAI-shaped with the right status; bad input never yields a 5xx (fuzzed)."""

from __future__ import annotations

import httpx
import openai
import pytest
from server_fuzz import fuzz_no_5xx

from conftest import API_KEY

USER = [{"role": "user", "content": "Hi"}]
HTTP = httpx.Client(timeout=30)  # one client: creating one costs ~0.1 s (TLS setup)
AUTH = {"Authorization": f"Bearer {API_KEY}"}


def post(server, path: str, body, headers=AUTH) -> httpx.Response:
    kw = {"json": body} if not isinstance(body, (str, bytes)) else {"content": body}
    return HTTP.post(server.url + path, headers={**headers, "Content-Type": "application/json"}, timeout=30, **kw)


def assert_error(r: httpx.Response, status: int, param: str | None = None, contains: str = "") -> dict:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["message"] and isinstance(err["type"], str)
    if param is not None:
        assert err["param"] == param
    assert contains in err["message"]
    return err


def test_auth(server, client):
    assert_error(post(server, "/v1/chat/completions", {"model": "tiny", "messages": USER}, headers={}), 401)
    assert_error(post(server, "/v1/chat/completions", {"model": "tiny", "messages": USER},
                      headers={"Authorization": "Bearer wrong"}), 401)
    bad = openai.OpenAI(base_url=server.url + "/v1", api_key="nope", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()
    assert HTTP.get(server.url + "/health").status_code == 200  # health and metrics need no key
    assert HTTP.get(server.url + "/metrics").status_code == 200


def test_unknown_model_is_404(client):
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="gpt-9", messages=USER)
    assert e.value.body["code"] == "model_not_found" and "tiny" in e.value.body["message"]


@pytest.mark.parametrize("body,param", [
    ({"model": "tiny", "messages": []}, "messages"),
    ({"model": "tiny"}, "messages"),
    ({"model": "tiny", "messages": [{"role": "wizard", "content": "x"}]}, "messages.0.role"),
    ({"model": "tiny", "messages": USER, "temperature": 5}, "temperature"),
    ({"model": "tiny", "messages": USER, "temperature": "hot"}, "temperature"),
    ({"model": "tiny", "messages": USER, "top_p": 0}, "top_p"),
    ({"model": "tiny", "messages": USER, "n": 0}, "n"),
    ({"model": "tiny", "messages": USER, "max_tokens": 0}, "max_tokens"),
    ({"model": "tiny", "messages": USER, "top_logprobs": 50, "logprobs": True}, "top_logprobs"),
    ({"model": "tiny", "messages": USER, "top_logprobs": 3}, "top_logprobs"),
    ({"model": "tiny", "messages": USER, "response_format": {"type": "json_schema"}}, "response_format"),
    ({"model": "tiny", "messages": USER, "response_format": {"type": "json_schema", "json_schema": {
        "name": "x", "schema": {"type": "nonsense"}}}}, "response_format.json_schema.schema"),
    ({"model": "tiny", "messages": USER, "tool_choice": "required"}, "tool_choice"),
    ({"model": "tiny", "messages": USER, "tools": [{"type": "function", "function": {"name": "f"}}],
      "tool_choice": {"type": "function", "function": {"name": "g"}}}, "tool_choice"),
    ({"model": "tiny", "messages": USER, "n": 1000}, "n"),
    ({"model": "tiny", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
     "messages.0.content"),
    ({"model": "tiny", "messages": USER, "n": 20}, "n"),  # more than max_num_seqs
])
def test_invalid_chat_parameters_are_400(server, body, param):
    assert_error(post(server, "/v1/chat/completions", body), 400, param)


@pytest.mark.parametrize("body,param", [
    ({"model": "tiny", "prompt": []}, "prompt"),
    ({"model": "tiny", "prompt": [10**9]}, "prompt"),
    ({"model": "tiny", "prompt": ""}, "prompt"),
    ({"model": "tiny", "prompt": "x", "suffix": "y"}, "suffix"),
    ({"model": "tiny", "prompt": "x", "logprobs": 99}, "logprobs"),
])
def test_invalid_completion_parameters_are_400(server, body, param):
    assert_error(post(server, "/v1/completions", body), 400, param)


def test_malformed_bodies_are_400(server):
    assert_error(post(server, "/v1/chat/completions", "{not json"), 400, contains="not valid JSON")
    assert_error(post(server, "/v1/chat/completions", "[1, 2]"), 400)
    assert_error(post(server, "/v1/chat/completions", ""), 400)


def test_prompt_longer_than_context(client, server):
    long = "Paris " * 3000
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": long}])
    msg = e.value.body["message"]
    assert e.value.body["code"] == "context_length_exceeded"
    assert str(server.engine.max_model_len) in msg and "tokens" in msg
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model="tiny", prompt="Paris", max_tokens=5000)
    assert "max_tokens" in e.value.body["message"] and "2048" in e.value.body["message"]


def test_unknown_route_and_method(server):
    assert_error(HTTP.get(server.url + "/v1/nothing"), 404)
    assert_error(HTTP.get(server.url + "/v1/chat/completions", headers=AUTH), 405)


def test_no_5xx_for_fuzzed_bodies(server):
    fuzz_no_5xx(server.url, API_KEY, examples=30)
