"""cpu_sampler.plugin and cpu_sampler.pins: installed through vLLM's entry point, on the CPU only,
on the pinned vLLM only, switched off by FAST_CPU_SAMPLER=0; and this test module FAILS when the
installed vLLM is not the one the plugin was checked against."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Iterator
from importlib.metadata import entry_points

import pytest
import torch
import vllm
from vllm.v1.sample import sampler as sampler_module
from vllm.v1.sample.ops import topk_topp_sampler

from cpu_sampler import pins, plugin

TARGETS = [
    (topk_topp_sampler, "apply_top_k_top_p"),
    (topk_topp_sampler.TopKTopPSampler, "forward_cpu"),
    (sampler_module, "apply_all_penalties"),
]


def test_the_installed_vllm_is_the_pinned_one() -> None:
    """If this fails, vLLM changed: the plugin no longer installs itself (see the warning in the
    engine log). Re-check the replaced functions against the new source, then re-pin with
    `python -m cpu_sampler.pins`."""
    assert vllm.__version__ == pins.VLLM_VERSION
    assert pins.check() == []


def test_check_reports_a_changed_function_and_version(monkeypatch: pytest.MonkeyPatch) -> None:
    name = "vllm.v1.sample.ops.topk_topp_sampler:apply_top_k_top_p_pytorch"
    monkeypatch.setitem(pins.SOURCES, name, "0" * 16)
    monkeypatch.setattr(vllm, "__version__", "0.33.0")
    problems = pins.check()
    assert problems[0] == "vLLM 0.33.0 (pinned: 0.32.0)"
    assert any(p.startswith(name) and "source changed" in p for p in problems)


def test_entry_point_is_registered() -> None:
    """pyproject.toml's entry point, installed by setup.sh's editable install of the project."""
    found = {e.name: e.value for e in entry_points(group="vllm.general_plugins")}
    assert found.get("cpu_sampler") == "cpu_sampler.plugin:register"


@pytest.fixture
def pristine(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """vLLM's own functions in place for the test, and whatever was there restored after."""
    for owner, name in TARGETS:
        monkeypatch.setattr(owner, name, inspect.unwrap(getattr(owner, name)))
    monkeypatch.delenv(plugin.ENV, raising=False)
    yield


def installed() -> list[bool]:
    return [getattr(getattr(owner, name), "_cpu_sampler", False) for owner, name in TARGETS]


@pytest.mark.usefixtures("pristine")
def test_register_installs_on_cpu_once() -> None:
    plugin.register()
    assert installed() == [True, True, True]
    first = [getattr(owner, name) for owner, name in TARGETS]
    plugin.register()  # idempotent: nothing wrapped twice
    assert [getattr(owner, name) for owner, name in TARGETS] == first
    assert pins.check() == []  # __wrapped__ keeps vLLM's source visible to the pin check


@pytest.mark.usefixtures("pristine")
@pytest.mark.parametrize("value", ["0", "false", "off"])
def test_switched_off_by_environment(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(plugin.ENV, value)
    plugin.register()
    assert installed() == [False, False, False]


@pytest.mark.usefixtures("pristine")
def test_not_installed_off_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(plugin.current_platform, "is_cpu", lambda: False)
    plugin.register()
    assert installed() == [False, False, False]


@pytest.mark.usefixtures("pristine")
def test_not_installed_on_a_changed_vllm(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setitem(pins.SOURCES, "vllm.v1.sample.sampler:Sampler.sample", "0" * 16)
    with caplog.at_level(logging.WARNING, logger="vllm.plugins.cpu_sampler"):
        plugin.register()
    assert installed() == [False, False, False]
    assert "NOT installed" in caplog.text and "Sampler.sample" in caplog.text


@pytest.mark.usefixtures("pristine")
def test_one_line_on_first_use(caplog: pytest.LogCaptureFixture) -> None:
    plugin.register()
    plugin._announce.cache_clear()
    logits = torch.randn(2, 1000)
    with caplog.at_level(logging.INFO, logger="vllm.plugins.cpu_sampler"):
        for _ in range(3):
            topk_topp_sampler.apply_top_k_top_p(logits.clone(), None, torch.tensor([0.9, 0.9]))
    lines = [r for r in caplog.records if "cpu_sampler active" in r.getMessage()]
    assert len(lines) == 1
