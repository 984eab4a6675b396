"""Memory planner: how much KV cache each vLLM engine of a deployment gets on a given GPU.

    python scripts/plan_memory.py --config engine_config/gpu.yaml --gpu H200

Modules: `gpus` (the GPU catalogue), `model_shapes` (a model's config.json and the sizes that
follow from it), `memory` (the arithmetic), `report` (tables).
"""
