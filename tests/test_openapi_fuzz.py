"""Property-based fuzzing from OpenAPI schemas (schemathesis) against the REAL test stack:
the gateway's own schema (every route it documents) and vLLM 0.32's schema for every route the
gateway forwards, sent to the gateway. Over 1,000 generated requests in all; none may get a
5xx, and none may hang.

vLLM's schema is a snapshot (tests/data/vllm-0.32-openapi.json), checked against the live
engine so it cannot go stale. Generation lengths are capped in the schemas used here
(`max_tokens` always sent, at most 8 tokens; at most 2 sequences) so that the run fits CI;
everything else is generated as the schemas allow, and `model` is drawn from the names the
gateway serves (and sometimes anything at all), so most requests reach an engine instead of
stopping at a 404.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings

from gateway.app import create_app
from gateway.config import load_config
from tests.conftest import ROOT, Stack

pytestmark = pytest.mark.engines

VLLM_SCHEMA = Path(__file__).parent / "data" / "vllm-0.32-openapi.json"
FORWARDED = r"^/(v1/(chat/completions(/batch)?|completions|responses(/\{response_id\}(/cancel)?)?|messages(/count_tokens)?)|tokenize|detokenize)$"  # noqa: E501
NAMES = ["r1-tiny", "qwen-tiny", "r1", "qwen", "deepseek-r1", "native"]
REQUIRED_LENGTH = {"max_tokens", "max_output_tokens"}  # always sent: without them an engine may write 2,048 tokens
LENGTH_FIELDS = {"max_completion_tokens", "min_tokens"}
COUNT_FIELDS = {"n", "best_of", "top_logprobs", "logprobs", "prompt_logprobs"}
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES_PER_OPERATION", "100"))


def bounded(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema with generation lengths capped and `model` drawn mostly from served names."""
    schema = copy.deepcopy(schema)

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            props = node.get("properties")
            if isinstance(props, dict):
                for name in list(props):
                    if name in REQUIRED_LENGTH:
                        props[name] = {"type": "integer", "minimum": 1, "maximum": 8}
                        node["required"] = sorted({*node.get("required", []), name})
                    elif name in LENGTH_FIELDS:
                        props[name] = {"anyOf": [{"type": "integer", "minimum": 1, "maximum": 8}, {"type": "null"}]}
                    elif name in COUNT_FIELDS:
                        props[name] = {"anyOf": [{"type": "integer", "minimum": 0, "maximum": 2}, {"type": "null"}]}
                    elif name == "model":
                        props[name] = {"anyOf": [{"enum": NAMES}, {"type": "string", "maxLength": 12}]}
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(schema)
    return schema


def fuzz(schema: schemathesis.schemas.BaseSchema, base_url: str, examples: int) -> list[tuple[str, int]]:
    """Send `examples` generated requests per operation; return (operation, status) of each."""
    sent: list[tuple[str, int]] = []
    for result in schema.get_all_operations():
        fuzz_operation(result.ok(), base_url, examples, sent)
    return sent


def fuzz_operation(operation: Any, base_url: str, examples: int, sent: list[tuple[str, int]]) -> None:
    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        phases=[Phase.generate, Phase.shrink],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy())
    def probe(case: Any) -> None:
        response = case.call(base_url=base_url, timeout=90)
        sent.append((operation.label, response.status_code))
        assert response.status_code < 500, (
            f"{operation.label} -> {response.status_code}: {response.text[:400]}\n"
            f"body: {json.dumps(case.body, default=str)[:400]}"
        )

    probe()


def test_vllm_schema_snapshot_is_the_engines_own(stack: Stack) -> None:
    live = httpx.get(f"{stack.engine_url('qwen-tiny')}/openapi.json", timeout=30).json()
    assert live["paths"] == json.loads(VLLM_SCHEMA.read_text())["paths"]


def test_fuzz_the_gateway_and_the_routes_it_forwards(stack: Stack) -> None:
    gateway_schema = create_app(load_config(stack.config_path)).openapi()
    own = schemathesis.openapi.from_dict(bounded(gateway_schema))
    forwarded = schemathesis.openapi.from_dict(bounded(json.loads(VLLM_SCHEMA.read_text()))).include(
        path_regex=FORWARDED
    )
    sent = fuzz(own, stack.gateway_url, EXAMPLES) + fuzz(forwarded, stack.gateway_url, EXAMPLES)
    assert len(sent) >= 1000, f"only {len(sent)} requests generated"
    statuses = sorted({status for _, status in sent})
    print(f"fuzz: {len(sent)} requests, statuses {statuses}, {ROOT.name}")
    # The stack still serves after all that.
    assert httpx.get(f"{stack.gateway_url}/ready", timeout=10).status_code == 200
