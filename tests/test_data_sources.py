"""The data-source registry: the built-in sources, unknown names, a source added without editing spikeyolo, and
per-loader overrides of the data config reaching the Gen1 loader."""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import torch

import spikeyolo
from spikeyolo.data import (SOURCES, DataSource, DatasetError, DatasetSpec, dataloader_from_config, get_source,
                            load_dataset_spec, register_source, spec_from_config)
from spikeyolo.data.events.synthetic import SceneConfig, write_recording
from spikeyolo.data.sources import _REGISTRY
from spikeyolo.io import plain

BUILT_IN = ["embedded", "yolo", "coco_json", "gen1", "gen4"]


def test_registry_lists_the_built_in_sources():
    assert list(SOURCES) == BUILT_IN
    assert [get_source(name).name for name in BUILT_IN] == BUILT_IN
    assert [name for name in BUILT_IN if get_source(name).is_event_data] == ["gen1", "gen4"]
    with pytest.raises(ValueError, match="'gen1' is already registered"):
        register_source(type(get_source("gen1"))())


def test_unknown_source_is_one_line_naming_the_valid_ones():
    expected = "unknown dataset source 'nope'; expected one of embedded, yolo, coco_json, gen1, gen4"
    for resolve in (lambda: get_source("nope"), lambda: load_dataset_spec("nope"),
                    lambda: spec_from_config({"source": "nope"})):
        with pytest.raises(DatasetError) as err:
            resolve()
        assert str(err.value) == expected
    with pytest.raises(DatasetError) as err:   # the data config's hint is appended, still one line
        spec_from_config(spikeyolo.compose(["data.source=nope", "data.hint='see docs/data.md'"]).data)
    assert str(err.value) == f"{expected} (see docs/data.md)"


class CountingSource(DataSource):
    """A source made in the test: ``count`` samples 0..count-1 of ``names`` under ``root``."""

    name = "counting"

    def __init__(self) -> None:
        self.calls: list[tuple[str, int, int, int, int]] = []

    def spec(self, data_cfg: Mapping[str, Any]) -> DatasetSpec:
        root = Path(data_cfg["root"])
        return DatasetSpec(name="counting", source=self.name, root=root, train=[], val=[root],
                           names=list(data_cfg["names"]))

    def loader(self, spec: DatasetSpec, data_cfg: Mapping[str, Any], split: str, batch_size: int, workers: int,
               rank: int = -1, stride: int = 32, device: Any = None, **overrides: Any) -> torch.utils.data.DataLoader:
        cfg = {**plain(data_cfg), **overrides}
        self.calls.append((split, batch_size, workers, stride, int(cfg["imgsz"])))
        return torch.utils.data.DataLoader(list(range(int(cfg["count"]))), batch_size=batch_size)


@pytest.fixture
def counting():
    source = register_source(CountingSource())
    try:
        yield source
    finally:
        _REGISTRY.pop(source.name)


def test_a_registered_source_serves_spec_and_loader_without_other_edits(counting, tmp_path):
    data = spikeyolo.compose(["data.source=counting", f"+data.root={tmp_path}", "+data.names=[a,b]",
                              "+data.count=5"]).data          # the trees config with its source swapped
    spec = spec_from_config(data)
    assert (spec.source, spec.name, spec.num_classes, spec.val) == ("counting", "trees", 2, [tmp_path])
    loader = dataloader_from_config(spec, data, "val", 2, 0, stride=16, imgsz=64)
    assert [batch.tolist() for batch in loader] == [[0, 1], [2, 3], [4]]
    assert counting.calls == [("val", 2, 0, 16, 64)]
    assert data.imgsz == 320            # an override applies to that one loader, the config is unchanged
    with pytest.raises(DatasetError, match="data.num_classes=3 but the dataset has 2 classes"):
        spec_from_config(spikeyolo.compose(["data.source=counting", f"+data.root={tmp_path}", "+data.names=[a,b]",
                                            "data.num_classes=3"]).data)
    assert list(SOURCES) == [*BUILT_IN, "counting"]


def test_loader_overrides_reach_the_gen1_loader(tmp_path, monkeypatch):
    monkeypatch.setenv("SPIKEYOLO_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "gen1"
    write_recording(root / "test", "synthetic_test_0000", 0.9, (0, zlib.crc32(b"test"), 0),
                    SceneConfig(label_period_us=100_000))
    data = spikeyolo.compose(["data=gen1", f"data.root={root}", "data.imgsz=64", "data.preprocess_workers=1"],
                             config_name="eval").data         # data.time_steps null: the checkpoint's T
    spec = spec_from_config(data)
    loaders = {window: dataloader_from_config(spec, data, "val", 2, 0, device="cpu", time_steps=2, progress=False,
                                              **({"window_us": window} if window else {}))
               for window in (None, 100_000)}
    reps = {window: loader.dataset.representation for window, loader in loaders.items()}
    assert [(rep.window_us, rep.time_steps) for rep in reps.values()] == [(250_000, 2), (100_000, 2)]
    assert (data.window_us, data.time_steps) == (250_000, None)
    assert sorted(path.name[:18] for path in (tmp_path / "cache" / "gen1").iterdir()) == \
        ["spikeyolo_T2_100ms", "spikeyolo_T2_250ms"]
    events = {window: [s.num_events for s in loader.dataset.samples] for window, loader in loaders.items()}
    assert len(events[None]) == len(events[100_000]) == 4     # labels every 100 ms from 0.5 s on
    assert all(0 < short < full for short, full in zip(events[100_000], events[None], strict=True))
    assert next(iter(loaders[100_000]))["img"].shape == (2, 2, 3, 64, 64)
