"""The HTTP server on a CUDA engine (tiny model: no downloads on the GPU machine)."""

from __future__ import annotations

import json
import threading

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("openai")


def test_server_on_cuda(tiny_dir):
    import jsonschema
    from openai import OpenAI

    from lmsmith.serve.engine import Engine
    from lmsmith.serve.server import BackgroundServer, create_app

    engine = Engine(str(tiny_dir), device="cuda", max_num_seqs=16)
    with BackgroundServer(create_app(engine, "tiny", max_num_seqs=16)) as srv:
        client = OpenAI(base_url=srv.url + "/v1", api_key="none", max_retries=0, timeout=120)
        msgs = [{"role": "user", "content": "Hi"}]
        r = client.chat.completions.create(model="tiny", messages=msgs, max_tokens=16, temperature=0)
        streamed = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
            model="tiny", messages=msgs, max_tokens=16, temperature=0, stream=True))
        assert streamed == r.choices[0].message.content and r.usage.completion_tokens == 16
        schema = {"type": "object", "properties": {"n": {"type": "integer", "minimum": 0, "maximum": 99}},
                  "required": ["n"], "additionalProperties": False}
        j = client.chat.completions.create(model="tiny", messages=msgs, max_tokens=40, temperature=0, response_format={
            "type": "json_schema", "json_schema": {"name": "n", "schema": schema}})
        jsonschema.validate(json.loads(j.choices[0].message.content), schema)
        texts: dict[int, str] = {}

        def worker(i: int) -> None:
            texts[i] = client.completions.create(model="tiny", prompt=f"Q{i}", max_tokens=8,
                                                 temperature=0).choices[0].text

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(texts) == 16
