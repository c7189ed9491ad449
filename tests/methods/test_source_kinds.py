"""One list of training-source kinds (issue 21): a method's SamplerSpec names the engine's kinds."""

from __future__ import annotations

import pytest

from sbirkit.engine.sources import SOURCE_KINDS
from sbirkit.errors import ConfigError
from sbirkit.methods import base
from sbirkit.methods.base import Method, SamplerSpec


class _Ctx:
    """Records which source the default train_source asks the context for."""

    def pairs(self, mode, classes_per_batch):
        return ("pairs", mode, classes_per_batch)

    def episodes(self, group_by, k_support, k_query, tasks_per_step):
        return ("episodes", group_by, k_support, k_query, tasks_per_step)

    def generated(self):
        return ("generated",)


def _method(spec: SamplerSpec) -> Method:
    m = Method.__new__(Method)  # the hook needs no encoder
    m.sampler_spec = lambda: spec
    return m


def test_spec_kinds_are_the_engines_source_kinds():
    assert base.SOURCE_KINDS is SOURCE_KINDS
    assert set(base.SPEC_KINDS) == set(SOURCE_KINDS) - {"samples"}


@pytest.mark.parametrize("kind, want", [("pairs", "pairs"), ("episodes", "episodes"), ("episodic", "episodes"),
                                        ("generated", "generated")])
def test_every_spec_kind_builds_its_source(kind, want):
    assert _method(SamplerSpec(kind=kind)).train_source(_Ctx())[0] == want


def test_an_unknown_kind_names_the_engines_kinds():
    with pytest.raises(ConfigError, match="sampler_spec kind: expected one of pairs, episodes, generated, got 'tasks'"):
        _method(SamplerSpec(kind="tasks")).train_source(_Ctx())
