"""The load test's own command-line options and what they resolve to.

    locust -f loadtest --scenario pairs --models qwen-tiny --deployment engine_config/test.yaml ...

`add_options` is registered once, by users.py, on `events.init_command_line_parser`;
`LoadSettings.from_options(options)` turns the parsed options into models, tokenizer
directories and the traffic split, using the deployment YAML (the same file `server.py`
reads) to know the served names, their tokenizers and which model is the reasoning one.

Pure module: no User classes or event listeners (Locust imports every file in loadtest/).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.config import DeploymentConfig, load_config
from gateway.hardware import default_config_name

ROOT = Path(__file__).resolve().parent.parent

# Scenario name -> User class. Tags select several at once.
SCENARIOS: dict[str, str] = {
    "pair-128-256": "Pair128To256User",
    "pair-256-512": "Pair256To512User",
    "pair-512-1024": "Pair512To1024User",
    "chat-mix": "ChatMixUser",
    "reasoning": "ReasoningUser",
    "compare": "CompareEndpointUser",
    "mixed-models": "MixedModelUser",
    "multi-turn": "MultiTurnUser",
}
TAGS: dict[str, tuple[str, ...]] = {
    "pairs": ("pair-128-256", "pair-256-512", "pair-512-1024"),
    "all": tuple(SCENARIOS),
}


def add_options(parser: Any) -> None:
    """Locust's parser: plain add_argument (its groups lack the web-UI keywords)."""
    parser.add_argument(
        "--scenario",
        default="chat-mix",
        include_in_web_ui=False,  # it picks the User classes at startup: a later change would do nothing
        help=f"comma-separated scenarios or tags: {', '.join([*SCENARIOS, *TAGS])} (default chat-mix). "
        "User class names given as positional arguments take precedence.",
    )
    parser.add_argument(
        "--deployment",
        default=str(ROOT / "engine_config" / default_config_name()),
        include_in_web_ui=False,
        help="deployment YAML that names the models and their tokenizers (default: what `make run` serves)",
    )
    parser.add_argument(
        "--models",
        default="",
        include_in_web_ui=True,
        help="comma-separated served names or aliases to load (default: every model of the deployment)",
    )
    parser.add_argument(
        "--tokenizer",
        default="",
        include_in_web_ui=False,
        help="tokenizer directory for every model (default: each model's own directory)",
    )
    parser.add_argument(
        "--model-split",
        default="",
        include_in_web_ui=True,
        help="mixed-models traffic split as name=weight pairs, e.g. r1-tiny=3,qwen-tiny=1 (default: equal)",
    )
    parser.add_argument(
        "--reasoning-model",
        default="",
        include_in_web_ui=False,
        help="model for the reasoning scenario (default: the one with a reasoning parser)",
    )
    parser.add_argument(
        "--reasoning-max-tokens", type=int, default=1536, include_in_web_ui=True, help="max_tokens of reasoning answers"
    )
    parser.add_argument(
        "--turns", type=int, default=6, include_in_web_ui=True, help="multi-turn: user turns per conversation"
    )
    parser.add_argument(
        "--turn-tokens", type=int, default=96, include_in_web_ui=True, help="multi-turn: tokens of each user turn"
    )
    parser.add_argument(
        "--reply-tokens", type=int, default=64, include_in_web_ui=True, help="multi-turn: tokens of each answer"
    )
    parser.add_argument(
        "--system-prompt-tokens",
        type=int,
        default=256,
        include_in_web_ui=True,
        help="multi-turn: tokens of the system prompt every conversation shares",
    )
    parser.add_argument(
        "--think-time",
        type=float,
        default=0.0,
        include_in_web_ui=True,
        help="multi-turn: mean seconds a user reads and types between turns (uniform over 0.5x-1.5x; 0: none)",
    )
    parser.add_argument(
        "--conversation-seed",
        type=int,
        default=1,
        include_in_web_ui=False,
        help="multi-turn: seed of the shared system prompt (change it to start with cold prefix caches)",
    )
    parser.add_argument(
        "--shape",
        choices=("users", "steps", "arrival"),
        default="users",
        include_in_web_ui=False,
        help="load shape (see loadtest/shapes.py)",
    )
    parser.add_argument("--steps", default="1:30,4:30,16:60,64:60", help="--shape steps: users:seconds,...")
    parser.add_argument("--arrival-rate", type=float, default=1.0, help="--shape arrival: requests per second")
    parser.add_argument(
        "--token-check",
        default="auto",
        include_in_web_ui=False,
        help="compare Locust's output tokens with the engines' vllm:generation_tokens_total at the end: "
        "auto (the engines the host's GET /engines lists, else the host's own /metrics), "
        "comma-separated engine URLs, or off (see loadtest/token_check.py)",
    )
    parser.add_argument(
        "--token-tolerance", type=float, default=0.02, help="largest relative difference of the token check"
    )
    parser.add_argument(
        "--summary-json",
        default="",
        include_in_web_ui=False,
        help="write per-model output tokens and tok/s here at the end",
    )


def selected_classes(scenario: str) -> list[str]:
    """'pairs,chat-mix' -> the User class names to run."""
    names: list[str] = []
    for item in (s.strip() for s in scenario.split(",") if s.strip()):
        if item in TAGS:
            names += [SCENARIOS[s] for s in TAGS[item]]
        elif item in SCENARIOS:
            names.append(SCENARIOS[item])
        elif item in SCENARIOS.values():
            names.append(item)
        else:
            raise ValueError(f"--scenario: unknown {item!r}; choose from {', '.join([*SCENARIOS, *TAGS])}")
    return list(dict.fromkeys(names))


@dataclass(frozen=True)
class LoadSettings:
    gateway_url: str
    models: tuple[str, ...]
    tokenizers: dict[str, str]  # served name -> tokenizer directory ('' when unknown)
    split: dict[str, float]
    reasoning_model: str

    @classmethod
    def from_options(cls, options: Any) -> LoadSettings:
        return _settings(
            options.deployment, options.models, options.tokenizer, options.model_split, options.reasoning_model
        )


@functools.cache
def _settings(deployment: str, models: str, tokenizer: str, split: str, reasoning_model: str) -> LoadSettings:
    config = load_config(Path(deployment), check_paths=False)
    names = tuple(_served_name(config, m) for m in models.split(",") if m.strip()) or tuple(
        m.name for m in config.models
    )
    tokenizers = {m.name: tokenizer or _tokenizer_dir(config, m.name) for m in config.models}
    tokenizers |= {name: tokenizer or tokenizers.get(name, "") for name in names}
    weights = {name: 1.0 for name in names}
    for item in (s for s in split.split(",") if s.strip()):
        name, _, weight = item.partition("=")
        weights[_served_name(config, name)] = float(weight)
    reasoning = reasoning_model or next(
        (m.name for m in config.models if m.engine is not None and m.engine.reasoning_parser), names[0]
    )
    gateway = f"http://{config.gateway.host}:{config.gateway.port}"
    return LoadSettings(gateway, names, tokenizers, weights, _served_name(config, reasoning))


def _served_name(config: DeploymentConfig, name: str) -> str:
    model = config.find_model(name.strip())
    return model.name if model is not None else name.strip()  # an engine outside the config: trust the name


def _tokenizer_dir(config: DeploymentConfig, name: str) -> str:
    model = config.find_model(name)
    if model is None or model.engine is None:
        return ""
    path = model.engine.tokenizer or model.engine.model
    return path if Path(path).is_dir() else ""
