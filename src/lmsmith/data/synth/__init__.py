"""Synthetic data: prompt a model (in-process engine or any OpenAI-compatible endpoint) to generate, evolve,
transform and backtranslate instruction data, then curate it with a judge. Every model call is cached, output
is written per chunk, so a killed run resumes without repeating a request and ends with the same bytes.

The generators here take a backend object (`backends.SynthBackend`); they never import the engine or the
judge. The in-process engine backend lives in `lmsmith.serve.synth_backend` and the judge adapter is built by
`lmsmith.data.synth.cli`, an entry point, so `data/` keeps importing nothing after it in the flow.
"""
