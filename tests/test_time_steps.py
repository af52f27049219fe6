"""T of the event clips is settled in one place (GitHub issue #26): spikeyolo.config.resolve_time_steps."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

import spikeyolo
from spikeyolo.config import checked_time_steps, resolve_time_steps
from spikeyolo.errors import UserError


def _model(time_steps):
    return SimpleNamespace(time_steps=time_steps)


def test_the_data_configs_default_follows_the_model_not_the_neuron_group():
    cfg = spikeyolo.compose(["data=gen1", "neuron.time_steps=1"])   # a checkpoint with T = 2 replaces the group's T
    assert resolve_time_steps(cfg, _model(2)) == 2
    assert cfg.data.time_steps == 1                                  # read, never written


def test_a_requested_time_steps_must_be_the_models():
    cfg = spikeyolo.compose(["data=gen1", "neuron.time_steps=2", "data.time_steps=2"])
    assert resolve_time_steps(cfg, _model(2)) == 2
    cfg = spikeyolo.compose(["data=gen1", "neuron.time_steps=2", "data.time_steps=4"])
    with pytest.raises(UserError, match=r"data.time_steps=4 but the model runs T=2"):
        resolve_time_steps(cfg, _model(2))


def test_a_model_without_time_steps_takes_the_request_then_the_checkpoints_then_one():
    assert checked_time_steps(3, _model(None)) == 3
    assert checked_time_steps(None, _model(None), {"time_steps": 4}) == 4
    assert checked_time_steps(None, _model(None), {}) == 1
    for bad in (0, -1, 2.5, True, "2"):
        with pytest.raises(UserError, match="positive integer"):
            checked_time_steps(bad, _model(2))
