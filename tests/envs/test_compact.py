"""Issue 33: every registered environment works straight from ``gymnasium.make`` on a fresh install, from the compact
demo world packaged with ``envs``; both checkers pass; an agent blind to the mask runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from fnmatch import fnmatch
from pathlib import Path

import numpy as np
import pytest

import envs
from envs.catalog import SimCatalog
from envs.compact import COMPACT_ITEMS, COMPACT_SEED, COMPACT_WORLD_PATH, build_compact_world, load_compact_world

REPO = Path(envs.__file__).resolve().parents[1]

# Run in an empty directory with no RANKER_DATA_DIR and no prior command: the user's first lines.
FIRST_LINES = """
import json, sys, warnings
import gymnasium as gym
import envs
made = {}
for env_id in envs.ENV_IDS:
    env = gym.make(env_id)
    observation, _ = env.reset(seed=0)
    made[env_id] = (env.unwrapped.catalog.source, env.observation_space.contains(observation))
heavy = [name for name in ("torch", "faiss", "transformers", "redis") if name in sys.modules]
warnings.simplefilter("ignore")
from gymnasium.utils.env_checker import check_env as gymnasium_check
from stable_baselines3.common.env_checker import check_env as sb3_check
from stable_baselines3 import PPO
for env_id in envs.ENV_IDS:
    gymnasium_check(gym.make(env_id).unwrapped, skip_render_check=True)
    sb3_check(gym.make(env_id).unwrapped)
plain = PPO("MultiInputPolicy", gym.make("envs/SlateShoppingTiny-v0", n_candidates=6), n_steps=64, batch_size=32, n_epochs=1, seed=0)
plain.learn(256)  # a plain agent knows nothing of the mask: it places padding slots and repeats
module_form = gym.make("envs:envs/SlateShoppingSmall-v0").reset(seed=1)[0]["features"].shape
print(json.dumps({"made": made, "heavy": heavy, "module_form": list(module_form)}))
"""


def test_every_registered_id_works_from_gym_make_in_a_fresh_directory(tmp_path):
    environment = {name: value for name, value in os.environ.items() if name != "RANKER_DATA_DIR"}
    environment["PYTHONPATH"] = str(REPO)
    done = subprocess.run([sys.executable, "-c", FIRST_LINES], cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(report["made"]) == set(envs.ENV_IDS)
    for env_id, (source, contained) in report["made"].items():
        assert contained, env_id
        assert source.startswith("compact demo world") or env_id.endswith("Tiny-v0"), (env_id, source)
    assert report["heavy"] == []  # making and stepping the packaged world is numpy
    assert report["module_form"][0] == 20
    assert list(tmp_path.iterdir()) == []  # nothing written where the user stands


def test_the_compact_world_is_the_demo_generator_at_600_items():
    from ranker.catalog.demo import generate_items

    world = load_compact_world()
    items = generate_items(COMPACT_ITEMS, COMPACT_SEED)
    assert world.item_ids == [item.item_id for item in items]
    assert world.titles == [item.title for item in items]
    np.testing.assert_allclose(world.prices, [item.price for item in items])
    assert world.has_pictures and world.has_image.all() and len(world.category_names) == 24
    assert world.calibration.fitted  # the index's fitted channel calibration, as `make serve`'s demo shop has
    for name in ("text", "image", "image_in_text", "query_text"):
        vectors = getattr(world, name)
        assert vectors.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_the_packaged_world_is_small_and_half_precision():
    assert COMPACT_WORLD_PATH.stat().st_size < 6_000_000
    with np.load(COMPACT_WORLD_PATH, allow_pickle=False) as stored:
        assert stored["text"].dtype == np.float16 and stored["query_text"].dtype == np.float16


def test_a_wheel_carries_the_packaged_world():
    """The package data globs of pyproject.toml pick up the asset (a fresh `pip install` ships it)."""
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    relative = COMPACT_WORLD_PATH.relative_to(REPO / "envs").as_posix()
    assert any(fnmatch(relative, pattern) for pattern in config.get("envs", []))


def test_half_precision_round_trip_keeps_retrieval(sim_catalog, tmp_path):
    path = sim_catalog.save(tmp_path / "half.npz", vector_dtype=np.float16, compress=True)
    half = SimCatalog.load(path)
    full_rows, _, _ = sim_catalog.retrieval_table("text", 20)
    half_rows, _, _ = half.retrieval_table("text", 20)
    assert (full_rows[:, :5] == half_rows[:, :5]).mean() > 0.97  # top-5 order survives float16 rounding
    np.testing.assert_allclose(half.text, sim_catalog.text, atol=2e-3)


@pytest.mark.slow
def test_rebuilding_the_compact_world_reproduces_the_packaged_one(tmp_path):
    """The asset is what `python -m envs.compact` writes (about 30 s with the encoders exported)."""
    rebuilt = SimCatalog.load(build_compact_world(tmp_path / "world.npz", progress=False))
    packaged = load_compact_world()
    assert rebuilt.item_ids == packaged.item_ids and rebuilt.query_texts == packaged.query_texts
    np.testing.assert_allclose(rebuilt.text, packaged.text, atol=2e-3)
    np.testing.assert_allclose(rebuilt.query_text, packaged.query_text, atol=2e-3)
