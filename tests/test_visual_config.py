"""The ``[visual]`` config table: defaults, checks that name the key, and paths resolved like the others."""

from __future__ import annotations

from pathlib import Path

import pytest

import models
from engine import config

BASE = {"catalogue": {"path": "catalogue.parquet"}, "events": {"avro": ["events/*.avro"]}}


def visual(**values) -> config.Visual:
    return config.parse({**BASE, "visual": values}, base=Path("/shop")).visual


def test_defaults_are_off_with_the_packaged_encoder():
    assert config.parse(BASE, base=Path("/shop")).visual == config.Visual()
    assert config.Visual() == config.Visual(enabled=False, encoder="efficientnet-lite0", metric="angular")


def test_open_clip_settings_and_a_relative_checkpoint():
    got = visual(
        enabled=True, encoder="open_clip", model="ViT-B-32", checkpoint="weights/clip.bin", n_trees=10, search_k=5000
    )
    assert got.checkpoint == Path("/shop/weights/clip.bin")
    assert (got.model, got.n_trees, got.search_k) == ("ViT-B-32", 10, 5000)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"encoder": "resnet"}, "visual.encoder must be one of efficientnet-lite0, open_clip, not 'resnet'"),
        ({"metric": "cosine"}, "visual.metric must be one of angular, euclidean, dot"),
        ({"enabled": "yes"}, "visual.enabled must be true or false"),
        ({"n_trees": 0}, "visual.n_trees must be an integer >= 1, not 0"),
        ({"search_k": -2}, "visual.search_k must be an integer >= -1"),
        ({"min_sessions": 1.5}, "visual.min_sessions must be an integer >= 0"),
        ({"checkpoint": ""}, "visual.checkpoint must be a non-empty string"),
        ({"model": "ViT-B-32"}, 'are for encoder = "open_clip"'),
        ({"n_tree": 5}, "unknown config key visual.n_tree"),
        ({"dims": 64, "metric": "dot"}, "visual.dims (search in principal components) needs metric"),
        ({"candidates": 0}, "visual.candidates must be an integer >= 1"),
    ],
)
def test_bad_values_name_the_key(values, message):
    with pytest.raises(config.ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        visual(**values)


def test_config_names_what_models_accepts():
    """The config checks names against models' lists without importing torch or Annoy."""
    assert models.ENCODERS == ("efficientnet-lite0", "open_clip")
    assert models.METRICS == ("angular", "euclidean", "dot")
