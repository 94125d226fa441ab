"""Fuzzing the server's OpenAPI schema with hypothesis: bad input must never produce a 5xx."""

from __future__ import annotations

import httpx


def fuzz_no_5xx(url: str, api_key: str | None, examples: int = 30) -> None:
    """Bodies built from the schema's fields (schema-shaped values mixed with arbitrary JSON), posted to
    both generation endpoints; every answer must be < 500 and errors must have OpenAI's shape."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    spec = httpx.get(url + "/openapi.json").json()
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

    @settings(max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(st.one_of(st.tuples(st.just("/v1/chat/completions"), chat),
                     st.tuples(st.just("/v1/chat/completions"), st.builds(lambda b, m: {**b, "messages": m}, chat, messages)),
                     st.tuples(st.just("/v1/completions"), comp)))
    def check(case):
        path, body = case
        for key in ("max_tokens", "max_completion_tokens"):  # keep generation short: this is about input
            if isinstance(body.get(key), int) and body[key] > 16:
                body[key] = 16
        body.setdefault("max_tokens", 16)
        body.pop("stream", None)
        r = http.post(url + path, json=body, headers=headers)
        assert r.status_code < 500, (body, r.text)
        if r.status_code >= 400:
            assert set(r.json()["error"]) == {"message", "type", "param", "code"}

    with httpx.Client(timeout=60) as http:
        check()
