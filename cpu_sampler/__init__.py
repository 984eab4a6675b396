"""Sampled decoding on vLLM's CPU engine at close to greedy speed, with the tokens vLLM would pick.

A vLLM general plugin (`vllm.general_plugins` entry point `cpu_sampler` in pyproject.toml, so
vLLM loads it in every engine process) that replaces two per-step costs of vLLM 0.32's CPU
sampler with exact equivalents:

- `top_k_top_p`: top-k/top-p without sorting the vocabulary (vLLM sorts all 151,936 logits of
  every sequence at every step: about 17 ms per sequence on one core);
- `penalties`: the repetition penalty on the tokens each sequence has seen, not on batch x vocab
  matrices (about 65 ms per step for 32 sequences).

Same kept tokens, same logits bit for bit, so the same sampled tokens for the same seeds.
`plugin.register` installs it only on the CPU platform and only on the vLLM it was checked
against (`pins`); `FAST_CPU_SAMPLER=0` in the engine's environment turns it off, which the
deployment YAML sets through `engine.fast_cpu_sampler: false`.
"""
