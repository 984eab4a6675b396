"""LLM load-test scenarios for Locust. Run from the repository root:

    locust -f loadtest                                              # web UI on :8089, scenario chat-mix
    locust -f loadtest --headless -u 8 -r 8 -t 2m --scenario pairs --csv results/locust/pairs --html pairs.html
    locust -f loadtest --headless -u 4 -t 1m --scenario reasoning
    locust -f loadtest --host http://127.0.0.1:8112 --models qwen-tiny -u 4 -t 1m    # an engine, not the gateway
    locust -f loadtest --shape steps --steps 1:30,4:30,16:60 --scenario pair-128-256 --headless
    locust -f loadtest Pair128To256User ChatMixUser --headless -u 4 -t 1m       # by class name

Scenarios (`--scenario`, comma-separated; tags `pairs` and `all`):

    pair-128-256, pair-256-512, pair-512-1024
                    exact prompt length (the model's own tokenizer, chat template included) and
                    exactly that many output tokens (`ignore_eos` + `max_tokens`); the server's
                    `usage` must agree or the request fails
    chat-mix        short questions, long-document summaries and code requests (weights 6:2:2)
    reasoning       long answers from the reasoning model (R1), reasoning tokens included
    compare         POST /v1/compare (both models side by side, streamed): a `compare` row per
                    request (its length: both models' output tokens, from the summary event) and
                    TTFT / ITL / TPOT rows "compare <model>" per model
    mixed-models    chat traffic split between models by `--model-split r1-tiny=3,qwen-tiny=1`
    multi-turn      conversations of `--turns` turns that all start with one shared system prompt
                    (`--system-prompt-tokens`, drawn from `--conversation-seed`): every turn sends
                    the whole conversation so far plus `--turn-tokens` new tokens and gets exactly
                    `--reply-tokens` back, `--think-time` seconds apart (the prefix cache's case;
                    loadtest/conversations.py); the conversation's id goes in the OpenAI `user`
                    field, which the `session` routing policy keys on

Every request streams with `stream_options.include_usage` and reports chat / TTFT / ITL / TPOT
rows named "<scenario> <model>" (see sse.py); at the end a per-model table of output tokens
and tokens/s is printed (and written with `--summary-json PATH`), and the total is checked
against the engines' own `vllm:generation_tokens_total` (`--token-check`, token_check.py):
more than 2% apart and `locust` exits 1. The host defaults to the
gateway of `--deployment` (what `make run` serves). Distributed: one `--master` plus local
`--worker` processes, e.g. `locust -f loadtest --worker &` twice and
`locust -f loadtest --master --expect-workers 2 --headless -u 16 -t 2m`.

This file is the only one here that registers event listeners or defines Users; the others
are plain modules, because Locust imports every .py file in the directory.
"""

from __future__ import annotations

import logging
import random
import time
from typing import Any

import gevent
import gevent.lock
from locust import FastHttpUser, LoadTestShape, events, task
from locust.runners import STATE_MISSING, WORKER_REPORT_INTERVAL, MasterRunner, WorkerRunner
from locust.stats import CSV_STATS_INTERVAL_SEC
from transformers import AutoTokenizer  # noqa: F401 - see below

from loadtest.conversations import Conversation, shared_system_prompt
from loadtest.options import LoadSettings, add_options, selected_classes
from loadtest.shapes import ArrivalRate, Target, shape_from_options
from loadtest.streams import stream_chat, stream_compare
from loadtest.summary import format_summary, summarize, write_summary
from loadtest.token_check import TokenCheck, format_check
from workload.prompts import PromptFactory, prompt_factory
from workload.sse import StreamTimings

# transformers is imported above, at load time, because importing it (torch's extension
# modules) holds the GIL for seconds at a time: done later, a worker would miss its heartbeats
# to the master (3 s) and be dropped. Tokenizer files are then read in a thread (see below).

events.init_command_line_parser.add_listener(add_options)
log = logging.getLogger("loadtest")


# A worker tells the master once it can build prompts; the master's clock waits for that.
PROMPTS_READY = "loadtest_prompts_ready"


@events.init.add_listener
def _configure(environment: Any, runner: Any, **_: Any) -> None:
    options = environment.parsed_options
    if options is None:  # Locust used as a library
        return
    settings = LoadSettings.from_options(options)
    environment.host = environment.host or settings.gateway_url
    if isinstance(runner, WorkerRunner):
        # The master chooses the users and sends its options; a worker only gets ready for them.
        _load_prompt_factories(settings)
        runner.send_message(PROMPTS_READY)
        return
    if not options.user_classes:
        try:
            wanted = selected_classes(options.scenario)
        except ValueError as exc:
            raise SystemExit(str(exc)) from exc
        environment.user_classes[:] = [c for c in environment.user_classes if c.__name__ in wanted]
        log.info("scenario %s: %s", options.scenario, ", ".join(c.__name__ for c in environment.user_classes))
    _watch_token_counts(environment)
    if isinstance(runner, MasterRunner):
        runner.register_message(PROMPTS_READY, _worker_ready)
    else:
        _load_prompt_factories(settings)  # now, before the clock starts, not in the first request


def _worker_ready(environment: Any, msg: Any, **_: Any) -> None:
    if isinstance(environment.shape_class, ScenarioShape):
        environment.shape_class.workers_ready.add(msg.node_id)


# One loader at a time: transformers' lazy imports are not safe to run in two threads at once.
_loading = gevent.lock.Semaphore()


def _load_prompt_factories(settings: LoadSettings) -> dict[str, PromptFactory]:
    """Every model's prompt factory, loaded in an OS thread (seconds each: transformers import,
    tokenizer files) so that the gevent loop keeps running, above all a worker's heartbeats
    to its master, which drops workers that stay silent for 60 s."""
    models = {*settings.models, *settings.split, settings.reasoning_model}
    paths = {m: settings.tokenizers[m] for m in models if settings.tokenizers.get(m)}
    with _loading:  # later callers wait here (cooperatively), then find the factories cached
        pool = gevent.get_hub().threadpool
        return {m: pool.apply(prompt_factory, (path,)) for m, path in paths.items()}


def _watch_token_counts(environment: Any) -> None:
    """At test start, read the engines' token counters; at the end, compare, print the summary
    and set exit code 1 when Locust's output tokens and the engines' differ beyond tolerance."""
    options = environment.parsed_options
    check = TokenCheck.resolve(environment.host, options.token_check, tolerance=options.token_tolerance)

    def started(**_: Any) -> None:
        check.start()

    def quitting(environment: Any, **_: Any) -> None:
        summary = summarize(environment.stats)
        gevent.sleep(1.0)  # let the engines' metrics catch up with their last responses
        summary["token_check"] = result = check.finish(summary["output_tokens"])
        print("\nOutput tokens (the servers' usage):\n" + format_summary(summary), flush=True)
        print(format_check(result), flush=True)
        if result["status"] == "disagree":
            log.error("token check failed: %s", format_check(result))
            environment.process_exit_code = 1
        if options.summary_json:
            write_summary(summary, options.summary_json)

    environment.events.test_start.add_listener(started)
    environment.events.quitting.add_listener(quitting)


class ScenarioShape(LoadTestShape):
    """Drives Locust from the `--shape` data (shapes.py); honours -u/-r/-t (use_common_options).

    On a master, the clock starts only once every connected worker has said it can build
    prompts (loading a tokenizer takes seconds), so `-t` measures load, not warm-up."""

    use_common_options = True
    max_wait_for_workers_s = 600.0

    def __init__(self) -> None:
        super().__init__()
        self.workers_ready: set[str] = set()
        self._waiting_since: float | None = None
        self._released = False  # once running, workers joining later do not pause the test

    def tick(self) -> Target:
        runner = self.runner
        assert runner is not None
        if isinstance(runner, MasterRunner) and self._waiting_for_workers(runner):
            self.reset_time()
            return 0, 1.0
        if self._waiting_since is not None:  # the wait is over: the run, and its stats, start now
            self._waiting_since = None
            runner.stats.reset_all()
        target = shape_from_options(runner.environment.parsed_options).target(self.get_run_time())
        if target is None and runner.user_count:
            # Stop here, letting requests in flight finish (--stop-timeout), then let their stats
            # land before Locust quits: a headless master quits 0.5 s after telling its workers
            # to, and the CSV writer saves once a second, so the last requests would be missing.
            runner.stop()
            gevent.sleep((WORKER_REPORT_INTERVAL if isinstance(runner, MasterRunner) else CSV_STATS_INTERVAL_SEC) + 1)
        return target

    def _waiting_for_workers(self, runner: MasterRunner) -> bool:
        if self._released:
            return False
        connected = {worker.id for worker in runner.clients.values() if worker.state != STATE_MISSING}
        self._released = bool(connected) and connected <= self.workers_ready
        if self._released:
            return False
        self._waiting_since = self._waiting_since or time.monotonic()
        if time.monotonic() - self._waiting_since > self.max_wait_for_workers_s:
            self._released = True
            log.warning("workers not ready after %.0f s; starting anyway", self.max_wait_for_workers_s)
            return False
        return True


class LLMUser(FastHttpUser):
    """Streams chat requests; closed loop by default, paced in `--shape arrival`."""

    abstract = True
    # FastHttpUser's default 60 s would cut long generations (a 1,536-token reasoning answer at a
    # few tokens/s per stream under load); this is the longest silence allowed on the socket.
    network_timeout = 900.0
    connection_timeout = 30.0

    def on_start(self) -> None:
        options = self.environment.parsed_options
        self.settings = LoadSettings.from_options(options)
        self.factories = _load_prompt_factories(self.settings)  # cached: instant after the first user
        shape = shape_from_options(options)
        self.pacing_s = shape.pacing_s if isinstance(shape, ArrivalRate) else 0.0
        self._task_elapsed = 0.0
        if self.pacing_s:
            gevent.sleep(random.uniform(0, self.pacing_s))  # spread the first requests over one period

    def wait_time(self) -> float:
        if not self.pacing_s:
            return 0.0
        # Constant arrival rate: start a request every pacing_s seconds, whatever the last one took.
        return max(0.0, self.pacing_s - self._task_elapsed)

    def prompts(self, model: str) -> PromptFactory:
        factory = self.factories.get(model)
        if factory is None:
            raise ValueError(f"no local tokenizer known for {model!r}: pass --tokenizer DIR")
        return factory

    def chat(
        self,
        scenario: str,
        model: str,
        messages: list[dict[str, str]],
        *,
        max_tokens: int,
        prompt_tokens: int | None = None,
        fixed_output: bool = False,
        keep_text: bool = False,
        **extra: Any,
    ) -> StreamTimings | None:
        body: dict[str, Any] = {"model": model, "messages": messages, "max_tokens": max_tokens, **extra}
        if fixed_output:
            body["ignore_eos"] = True  # vLLM's extension: exactly max_tokens, whatever the model says
        started = time.perf_counter()
        timings = stream_chat(
            self,
            body,
            name=f"{scenario} {model}",
            expect_prompt_tokens=prompt_tokens,
            expect_completion_tokens=max_tokens if fixed_output else None,
            keep_text=keep_text,
        )
        self._task_elapsed = time.perf_counter() - started
        return timings


class LengthPairUser(LLMUser):
    """Exactly `prompt_tokens` in, exactly `output_tokens` out, alternating over --models."""

    abstract = True
    prompt_tokens = 0
    output_tokens = 0

    @task
    def length_pair(self) -> None:
        model = random.choice(self.settings.models)
        prompt = self.prompts(model).chat(self.prompt_tokens)
        self.chat(
            f"pair-{self.prompt_tokens}-{self.output_tokens}",
            model,
            prompt.messages,
            max_tokens=self.output_tokens,
            prompt_tokens=prompt.prompt_tokens,
            fixed_output=True,
        )


class Pair128To256User(LengthPairUser):
    prompt_tokens, output_tokens = 128, 256


class Pair256To512User(LengthPairUser):
    prompt_tokens, output_tokens = 256, 512


class Pair512To1024User(LengthPairUser):
    prompt_tokens, output_tokens = 512, 1024


class ChatMixUser(LLMUser):
    """What a chat product sees: mostly short questions, some long documents and code."""

    scenario = "chat-mix"

    def pick_model(self) -> str:
        return random.choice(self.settings.models)

    def ask(self, prompt_range: tuple[int, int], instruction: str, output_range: tuple[int, int]) -> None:
        model = self.pick_model()
        prompt = self.prompts(model).chat(random.randint(*prompt_range), instruction=instruction)
        self.chat(self.scenario, model, prompt.messages, max_tokens=random.randint(*output_range))

    @task(6)
    def short_question(self) -> None:
        # At least 64: Qwen's template alone (default system prompt) is about 30 tokens.
        self.ask((64, 192), "Answer the question above briefly.", (32, 160))

    @task(2)
    def summarize_document(self) -> None:
        self.ask((600, 1000), "Summarize the text above in one paragraph.", (96, 192))

    @task(2)
    def write_code(self) -> None:
        self.ask((100, 240), "Write a Python function that does what the text above describes.", (192, 384))


class MixedModelUser(ChatMixUser):
    """chat-mix traffic, each request sent to a model drawn by --model-split weights."""

    scenario = "mixed-models"

    def pick_model(self) -> str:
        names = list(self.settings.split)
        return random.choices(names, weights=[self.settings.split[n] for n in names])[0]


class MultiTurnUser(LLMUser):
    """Growing conversations sharing one system prompt, one after another, each on one model."""

    _conversations = 0

    def on_start(self) -> None:
        super().on_start()
        self.conversation: Conversation | None = None
        self.model = ""
        self.conversation_id = ""

    def wait_time(self) -> float:
        think = float(self.environment.parsed_options.think_time)
        if not think:
            return super().wait_time()
        # A person reads the answer and types the next turn; meanwhile the conversation is idle
        # and its cached prefix waits in the engine's cache with everyone else's.
        return random.uniform(0.5 * think, 1.5 * think)

    @task
    def turn(self) -> None:
        options = self.environment.parsed_options
        if self.conversation is None or self.conversation.finished:
            self.model = random.choice(self.settings.models)
            tokenizer = self.settings.tokenizers.get(self.model, "")
            if not tokenizer:
                raise ValueError(f"no local tokenizer known for {self.model!r}: pass --tokenizer DIR")
            system = shared_system_prompt(
                tokenizer, tokens=options.system_prompt_tokens, seed=options.conversation_seed
            )
            self.conversation = Conversation(system, turns=options.turns)
            MultiTurnUser._conversations += 1
            self.conversation_id = f"conversation-{random.getrandbits(48):012x}-{MultiTurnUser._conversations}"
        messages = self.conversation.ask(self.prompts(self.model).words(options.turn_tokens))
        timings = self.chat(
            "multi-turn",
            self.model,
            messages,
            max_tokens=options.reply_tokens,
            fixed_output=True,
            keep_text=True,
            user=self.conversation_id,
        )
        if timings is None or timings.text is None:
            self.conversation = None  # failed: start over rather than send a history with a hole
            return
        self.conversation.answer("".join(timings.text))


class ReasoningUser(LLMUser):
    """Long answers from the reasoning model: math word problems, no system prompt (R1's card)."""

    @task
    def solve(self) -> None:
        model = self.settings.reasoning_model
        a, b, c = random.randint(12, 987), random.randint(3, 97), random.randint(2, 19)
        question = (
            f"A warehouse holds {a} boxes. Each day {b} boxes arrive and {c} trucks each take away "
            f"{c + 5} boxes. After how many days does the warehouse first hold more than {a * 3} boxes? "
            "Please reason step by step, and put your final answer within \\boxed{}."
        )
        self.chat(
            "reasoning",
            model,
            [{"role": "user", "content": question}],
            max_tokens=self.environment.parsed_options.reasoning_max_tokens,
            temperature=0.6,  # R1's model card; the gateway would apply it too, an engine would not
            top_p=0.95,
        )


class CompareEndpointUser(LLMUser):
    """The gateway's side-by-side API: POST /v1/compare streamed for all --models at once."""

    @task
    def compare(self) -> None:
        models = list(self.settings.models)
        prompt = self.prompts(models[0]).chat(128)
        started = time.perf_counter()
        stream_compare(self, {"messages": prompt.messages, "max_tokens": 128}, models=models)
        self._task_elapsed = time.perf_counter() - started
