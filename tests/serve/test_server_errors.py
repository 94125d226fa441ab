"""Every error is OpenAI-shaped with the right status; bad input never yields a 5xx (fuzzed)."""

from __future__ import annotations

import httpx
import openai
import pytest

from conftest import API_KEY

USER = [{"role": "user", "content": "Hi"}]
AUTH = {"Authorization": f"Bearer {API_KEY}"}


def post(server, path: str, body, headers=AUTH) -> httpx.Response:
    kw = {"json": body} if not isinstance(body, (str, bytes)) else {"content": body}
    return httpx.post(server.url + path, headers={**headers, "Content-Type": "application/json"}, timeout=30, **kw)


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
    assert httpx.get(server.url + "/health").status_code == 200  # health and metrics need no key
    assert httpx.get(server.url + "/metrics").status_code == 200


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
    assert_error(httpx.get(server.url + "/v1/nothing"), 404)
    assert_error(httpx.get(server.url + "/v1/chat/completions", headers=AUTH), 405)


def test_no_5xx_for_fuzzed_bodies(server):
    """Hypothesis generates request bodies from the OpenAPI schema's fields, with wrong types mixed in."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    spec = httpx.get(server.url + "/openapi.json").json()
    schemas = spec["components"]["schemas"]
    scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**20, 10**20),
                        st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=20))
    json_values = st.recursive(scalars, lambda c: st.one_of(st.lists(c, max_size=3),
                                                            st.dictionaries(st.text(max_size=8), c, max_size=3)),
                               max_leaves=8)

    def field_value(prop: dict):
        # mostly schema-shaped values, sometimes arbitrary JSON
        ref = prop.get("$ref") or (prop.get("items") or {}).get("$ref")
        if ref:
            sub = schemas[ref.split("/")[-1]]
            obj = body_for(sub)
            return st.one_of(obj, st.lists(obj, min_size=1, max_size=2), json_values)
        return json_values

    def body_for(schema: dict):
        props = schema.get("properties", {})
        fixed = {"model": st.sampled_from(["tiny", "other"])} if "model" in props else {}
        optional = {k: field_value(v) for k, v in props.items() if k not in fixed}
        return st.fixed_dictionaries(fixed, optional=optional)

    chat = body_for(schemas["ChatCompletionRequest"])
    comp = body_for(schemas["CompletionRequest"])
    messages = st.lists(st.fixed_dictionaries({"role": st.sampled_from(["user", "system", "assistant", "tool"]),
                                               "content": st.one_of(st.text(max_size=30), st.none())}),
                        min_size=1, max_size=3)

    @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(st.one_of(st.tuples(st.just("/v1/chat/completions"), chat),
                     st.tuples(st.just("/v1/chat/completions"), st.builds(lambda b, m: {**b, "messages": m}, chat, messages)),
                     st.tuples(st.just("/v1/completions"), comp)))
    def check(case):
        path, body = case
        if isinstance(body.get("max_tokens"), int) and body["max_tokens"] > 64:
            body["max_tokens"] = 64  # keep it quick; the value range itself is covered above
        body.pop("stream", None)
        r = post(server, path, body)
        assert r.status_code < 500, (body, r.text)
        if r.status_code >= 400:
            assert set(r.json()["error"]) == {"message", "type", "param", "code"}

    check()
