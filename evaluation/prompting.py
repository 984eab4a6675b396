"""Per-model prompting, following each model's recommended usage, read from the gateway.

    models = [ModelInfo.from_gateway(entry) for entry in (await client.get("/v1/models")).json()["data"]]
    policy = policy_for(models[0])
    messages = policy.messages(item)           # [{"role": "user", "content": "... \\boxed{}."}]
    body = {"model": models[0].name, "messages": messages, **policy.sampling}

- DeepSeek-R1 distills (a model named or aliased deepseek-r1, or served with the deepseek_r1
  reasoning parser): the model card's recipe: no system prompt, every instruction in the user
  turn ("Please reason step by step, and put your final answer within \\boxed{}." for math),
  temperature 0.6, top-p 0.95.
- Any other model (Qwen2.5-Instruct): its own chat template with its defaults, i.e. no system
  message from us (the template adds Qwen's default one) and the sampling defaults the gateway
  lists for it; when it lists none, the engine's generation_config applies.

Both get the same task instruction (answer format) per kind of question, so differences in
scores come from the models, not from one of them being asked for a format the grader cannot
read. The policy is written into the run's results so a run can be reproduced.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from evaluation.items import Item

R1_SAMPLING = {"temperature": 0.6, "top_p": 0.95}  # DeepSeek-R1 model card
INSTRUCTIONS: dict[str, str] = {
    "math": "Please reason step by step, and put your final answer within \\boxed{}.",
    "logic": "Please reason step by step, and put your final answer within \\boxed{}.",
    # Qwen2.5-Coder's instruct-model HumanEval prompt; the grader takes the last code block.
    "code": (
        "Please provide a self-contained Python script that solves the following problem in a markdown code block:"
    ),
}


@dataclass(frozen=True)
class ModelInfo:
    """One entry of the gateway's /v1/models."""

    name: str
    aliases: list[str] = field(default_factory=list)
    root: str | None = None
    max_model_len: int | None = None
    sampling_defaults: dict[str, Any] = field(default_factory=dict)
    reasoning_parser: str | None = None

    @classmethod
    def from_gateway(cls, entry: dict[str, Any]) -> ModelInfo:
        return cls(
            name=str(entry["id"]),
            aliases=[str(a) for a in entry.get("aliases") or []],
            root=entry.get("root"),
            max_model_len=entry.get("max_model_len"),
            sampling_defaults=dict(entry.get("sampling_defaults") or {}),
            reasoning_parser=entry.get("reasoning_parser"),
        )

    @property
    def names(self) -> list[str]:
        return [self.name, *self.aliases]

    @property
    def is_deepseek_r1(self) -> bool:
        if self.reasoning_parser == "deepseek_r1":
            return True
        lowered = [n.lower() for n in [*self.names, self.root or ""]]
        return any("deepseek-r1" in n for n in lowered) or "r1" in lowered


@dataclass(frozen=True)
class PromptPolicy:
    family: str  # "deepseek-r1" | "chat-template-defaults"
    system_prompt: str | None
    instructions: dict[str, str]  # by item kind: math, code, logic
    sampling: dict[str, Any]  # sent with every request; empty means the engine's defaults
    sampling_source: str

    def messages(self, item: Item) -> list[dict[str, str]]:
        instruction = self.instructions[item.kind]
        if item.kind == "code":
            user = f"{instruction}\n```python\n{item.question.rstrip()}\n```"
        else:
            user = f"{item.question.rstrip()}\n\n{instruction}"
        system = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        return [*system, {"role": "user", "content": user}]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def policy_for(model: ModelInfo) -> PromptPolicy:
    if model.is_deepseek_r1:
        return PromptPolicy(
            family="deepseek-r1",
            system_prompt=None,
            instructions=dict(INSTRUCTIONS),
            sampling=model.sampling_defaults | R1_SAMPLING,
            sampling_source="DeepSeek-R1 model card",
        )
    return PromptPolicy(
        family="chat-template-defaults",
        system_prompt=None,
        instructions=dict(INSTRUCTIONS),
        sampling=dict(model.sampling_defaults),
        sampling_source=(
            "gateway sampling_defaults" if model.sampling_defaults else "engine defaults (generation_config.json)"
        ),
    )
