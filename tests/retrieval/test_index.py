"""VectorIndex: recall against exact search, deletes, upserts, compaction, filters, persistence."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import faiss
import numpy as np
import pytest

from ranker.retrieval.index import IndexConfig, VectorIndex, VectorIndexError

DIM = 32
N = 4_000
K = 10
KINDS = ("flat", "hnsw", "ivf")


@pytest.fixture(scope="module", autouse=True)
def one_faiss_thread():
    """One thread: light on a shared machine, and HNSW construction is then deterministic."""
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before)


def unit_rows(rng: np.random.Generator, n: int, dim: int = DIM) -> np.ndarray:
    rows = rng.standard_normal((n, dim)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def data() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(20240601)
    # Keys are not row numbers (not contiguous, not starting at 0), so a row/key mix-up shows.
    keys = rng.permutation(np.arange(N, dtype=np.int64) * 3 + 7)
    return {"vectors": unit_rows(rng, N), "keys": keys, "queries": unit_rows(rng, 60)}


# Uniform random unit vectors have no cluster structure, the worst case for IVF: with the
# default ivf_nprobe=32 of the 102 lists built for 4000 rows, recall@10 is about 0.88 here
# (0.82 under a 20% filter). The IVF tests probe 64 lists; test_ivf_probing_every_list_is_exact
# checks that nprobe is honoured on both the plain and the filtered path.
IVF_NPROBE = 64


def build(kind: str, keys: np.ndarray, vectors: np.ndarray, **config) -> VectorIndex:
    if kind == "ivf":
        config.setdefault("ivf_nprobe", IVF_NPROBE)
    index = VectorIndex(DIM, IndexConfig(index_type=kind, **config))
    index.add(keys, vectors)
    assert index.kind == kind
    return index


@pytest.fixture(scope="module")
def built(data) -> dict[str, VectorIndex]:
    """Read-only indexes shared by the tests that do not write."""
    return {kind: build(kind, data["keys"], data["vectors"]) for kind in KINDS}


def exact_search(queries: np.ndarray, keys: np.ndarray, vectors: np.ndarray, k: int, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    scores = queries @ vectors.T
    if allowed is not None:
        scores = np.where(allowed[None, :], scores, -np.inf)
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    top_scores = np.take_along_axis(scores, order, axis=1)
    return top_scores, np.where(np.isfinite(top_scores), keys[order], -1)


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    hits = sum(len(set(f[f >= 0]) & set(t[t >= 0])) for f, t in zip(found, truth))
    return hits / max(1, int((truth >= 0).sum()))


def mask_for(keys: np.ndarray, size: int) -> np.ndarray:
    mask = np.zeros(size, dtype=bool)
    mask[keys] = True
    return mask


# -------------------------------------------------------------------- recall
@pytest.mark.parametrize("kind, min_recall", [("flat", 1.0), ("hnsw", 0.95), ("ivf", 0.95)])
def test_recall_at_10_against_exact(built, data, kind: str, min_recall: float) -> None:
    index = built[kind]
    assert len(index) == N and index.n_dead == 0
    scores, keys = index.search(data["queries"], K)
    true_scores, true_keys = exact_search(data["queries"], data["keys"], data["vectors"], K)

    assert scores.shape == keys.shape == (len(data["queries"]), K)
    assert scores.dtype == np.float32 and keys.dtype == np.int64
    assert np.all(np.diff(scores, axis=1) <= 1e-6), "scores must come best first"
    assert set(np.unique(keys)) <= set(data["keys"].tolist())
    assert recall(keys, true_keys) >= min_recall
    if kind == "flat":
        assert recall(keys, true_keys) == 1.0
        np.testing.assert_allclose(scores, true_scores, atol=1e-5)
    # the score reported for a key is that key's inner product
    row_of = {int(key): row for row, key in enumerate(data["keys"])}
    for q, (row_scores, row_keys) in enumerate(zip(scores, keys)):
        expected = data["vectors"][[row_of[int(key)] for key in row_keys]] @ data["queries"][q]
        np.testing.assert_allclose(row_scores, expected, atol=1e-5)


def test_ivf_probing_every_list_is_exact(data) -> None:
    index = build("ivf", data["keys"], data["vectors"], ivf_nprobe=10_000)
    n_lists = index._index.nlist
    assert 1 < n_lists < N
    true_scores, true_keys = exact_search(data["queries"], data["keys"], data["vectors"], K)
    scores, keys = index.search(data["queries"], K)
    assert recall(keys, true_keys) == 1.0
    np.testing.assert_allclose(scores, true_scores, atol=1e-5)
    mask = mask_for(data["keys"][::4], int(data["keys"].max()) + 1)  # 25%: the FAISS filtered path
    _, truth = exact_search(data["queries"], data["keys"], data["vectors"], K, mask[data["keys"]])
    assert recall(index.search(data["queries"], K, allowed_keys=mask)[1], truth) == 1.0
    # and probing a single list is much worse: nprobe really reaches the search
    one = build("ivf", data["keys"], data["vectors"], ivf_nprobe=1)
    assert recall(one.search(data["queries"], K)[1], true_keys) < 0.5
    assert recall(one.search(data["queries"], K, allowed_keys=mask)[1], truth) < 0.5


def test_single_query_vector_is_one_row(built, data) -> None:
    scores, keys = built["flat"].search(data["queries"][0], K)
    assert keys.shape == (1, K)
    assert np.array_equal(keys[0], built["flat"].search(data["queries"][:1], K)[1][0])


# ---------------------------------------------------------------------- auto
def test_auto_picks_flat_below_threshold_and_hnsw_at_it(data) -> None:
    config = IndexConfig(index_type="auto", exact_threshold=1_000)
    assert config.resolve(999) == "flat" and config.resolve(1_000) == "hnsw"

    growing = VectorIndex(DIM, config)
    assert growing.kind == "flat"
    growing.add(data["keys"][:999], data["vectors"][:999])
    assert growing.kind == "flat"
    growing.add(data["keys"][999:1_000], data["vectors"][999:1_000])
    assert growing.kind == "hnsw" and len(growing) == 1_000

    # and it still answers well after the switch
    _, keys = growing.search(data["queries"], K)
    _, truth = exact_search(data["queries"], data["keys"][:1_000], data["vectors"][:1_000], K)
    assert recall(keys, truth) >= 0.95

    at_once = VectorIndex(DIM, config)
    at_once.add(data["keys"][:1_000], data["vectors"][:1_000])
    assert at_once.kind == "hnsw"

    below = VectorIndex(DIM, config)
    below.add(data["keys"][:999], data["vectors"][:999])
    assert below.kind == "flat"

    # compaction re-picks the type for the new size
    at_once.remove(data["keys"][:200])
    at_once.compact()
    assert len(at_once) == 800 and at_once.kind == "flat"


def test_explicit_type_is_kept_whatever_the_size(data) -> None:
    small = VectorIndex(DIM, IndexConfig(index_type="hnsw", exact_threshold=1_000_000))
    small.add(data["keys"][:50], data["vectors"][:50])
    assert small.kind == "hnsw"


# ------------------------------------------------------------------- deletes
@pytest.mark.parametrize("kind", KINDS)
def test_deleted_keys_disappear_from_next_search(data, kind: str) -> None:
    index = build(kind, data["keys"], data["vectors"])
    queries = data["queries"][:20]
    _, before = index.search(queries, K)
    doomed = np.unique(before[:, :3])  # the best three of every query

    assert index.remove(doomed) == len(doomed)
    assert index.remove(doomed) == 0  # already gone
    assert index.remove(np.array([10**12, -5])) == 0  # unknown keys are ignored
    assert len(index) == N - len(doomed) and index.n_dead == len(doomed)
    assert all(int(key) not in index for key in doomed)
    assert not np.isin(doomed, index.keys()).any()

    _, after = index.search(queries, K)
    assert not np.isin(after, doomed).any()
    assert (after >= 0).all()
    live = ~np.isin(data["keys"], doomed)
    _, truth = exact_search(queries, data["keys"][live], data["vectors"][live], K)
    assert recall(after, truth) >= (1.0 if kind == "flat" else 0.95)


# ------------------------------------------------------------------- upserts
@pytest.mark.parametrize("kind", KINDS)
def test_upsert_replaces_the_vector(data, kind: str) -> None:
    index = build(kind, data["keys"], data["vectors"])
    rng = np.random.default_rng(5)
    target_rows = np.array([0, 17, 2_500])
    target_keys = data["keys"][target_rows]
    old_vectors = data["vectors"][target_rows]
    new_vectors = unit_rows(rng, 3)

    # before: the old vector finds its own key first
    _, keys = index.search(old_vectors, K)
    assert np.array_equal(keys[:, 0], target_keys)

    index.add(target_keys, new_vectors)

    assert len(index) == N and index.n_dead == 3
    scores, keys = index.search(new_vectors, K)
    assert np.array_equal(keys[:, 0], target_keys)
    np.testing.assert_allclose(scores[:, 0], 1.0, atol=1e-5)
    _, keys = index.search(old_vectors, K)
    for row, key in enumerate(target_keys):
        assert key not in keys[row]
    stored, present = index.vectors_for(target_keys)
    assert present.all() and np.array_equal(stored, new_vectors)

    index.add(target_keys[:1], old_vectors[:1])  # and back again
    assert index.n_dead == 4 and len(index) == N
    _, keys = index.search(old_vectors[:1], 1)
    assert keys[0, 0] == target_keys[0]


def test_add_new_keys_to_a_built_index(data) -> None:
    for kind in KINDS:
        index = build(kind, data["keys"][:3_000], data["vectors"][:3_000])
        index.add(data["keys"][3_000:], data["vectors"][3_000:])
        assert len(index) == N and index.n_dead == 0
        _, keys = index.search(data["vectors"][3_000:3_050], 1)
        assert np.array_equal(keys[:, 0], data["keys"][3_000:3_050]), kind


# ---------------------------------------------------------------- compaction
@pytest.mark.parametrize("kind", KINDS)
def test_compact_removes_dead_rows_and_keeps_results(data, kind: str) -> None:
    index = build(kind, data["keys"], data["vectors"], compact_ratio=1.0)
    rng = np.random.default_rng(9)
    deleted = rng.choice(data["keys"], 300, replace=False)
    index.remove(deleted)
    replaced_rows = rng.choice(np.flatnonzero(~np.isin(data["keys"], deleted)), 200, replace=False)
    replaced_vectors = unit_rows(rng, 200)
    index.add(data["keys"][replaced_rows], replaced_vectors)
    assert index.n_dead == 500

    vectors = data["vectors"].copy()
    vectors[replaced_rows] = replaced_vectors
    live = ~np.isin(data["keys"], deleted)
    scores_before, keys_before = index.search(data["queries"], K)
    keys_set_before = set(index.keys().tolist())

    index.compact()

    assert index.n_dead == 0 and len(index) == N - 300
    assert set(index.keys().tolist()) == keys_set_before == set(data["keys"][live].tolist())
    assert index.kind == kind
    scores_after, keys_after = index.search(data["queries"], K)
    _, truth = exact_search(data["queries"], data["keys"][live], vectors[live], K)
    if kind == "flat":
        assert np.array_equal(keys_after, keys_before)
        np.testing.assert_allclose(scores_after, scores_before, atol=1e-6)
        assert recall(keys_after, truth) == 1.0
    else:
        assert recall(keys_after, truth) >= 0.95
    assert not np.isin(keys_after, deleted).any()
    stored, present = index.vectors_for(data["keys"][replaced_rows])
    assert present.all() and np.array_equal(stored, replaced_vectors)


@pytest.mark.parametrize("kind", KINDS)
def test_compaction_runs_on_its_own_past_compact_ratio_on_upserts(data, kind: str) -> None:
    index = build(kind, data["keys"][:400], data["vectors"][:400], compact_ratio=0.25)
    rng = np.random.default_rng(3)
    # 133 replaced: 133 dead of 533 rows = 0.2495, not past 0.25
    index.add(data["keys"][:133], unit_rows(rng, 133))
    assert index.n_dead == 133
    # one more: 134 / 534 = 0.2509 > 0.25 -> compacted
    new_vector = unit_rows(rng, 1)
    index.add(data["keys"][133:134], new_vector)
    assert index.n_dead == 0 and len(index) == 400 and index.kind == kind
    _, keys = index.search(new_vector, 1)
    assert keys[0, 0] == data["keys"][133]


@pytest.mark.parametrize("kind", KINDS)
def test_compaction_runs_on_its_own_past_compact_ratio_on_deletes(data, kind: str) -> None:
    index = build(kind, data["keys"][:400], data["vectors"][:400], compact_ratio=0.25)
    index.remove(data["keys"][:100])  # 100 / 400 = 0.25: not past
    assert index.n_dead == 100
    index.remove(data["keys"][100:101])  # 101 / 400 > 0.25
    assert index.n_dead == 0 and len(index) == 299
    _, keys = index.search(data["vectors"][:101], K)
    assert not np.isin(keys, data["keys"][:101]).any()
    _, keys = index.search(data["vectors"][101:400], 1)
    assert np.array_equal(keys[:, 0], data["keys"][101:400])


def test_delete_everything_then_add_again(data) -> None:
    for kind in KINDS:
        index = build(kind, data["keys"][:500], data["vectors"][:500])
        index.remove(data["keys"][:500])
        assert len(index) == 0
        scores, keys = index.search(data["queries"][:2], 3)
        assert (keys == -1).all() and np.isneginf(scores).all()
        index.compact()
        index.add(data["keys"][500:1_500], data["vectors"][500:1_500])
        _, keys = index.search(data["vectors"][500:520], 1)
        assert np.array_equal(keys[:, 0], data["keys"][500:520]), kind


# ------------------------------------------------------------------- filters
@pytest.mark.parametrize("kind", KINDS)
def test_allowed_keys_selecting_ten(built, data, kind: str) -> None:
    index = built[kind]
    rng = np.random.default_rng(11)
    chosen = rng.choice(data["keys"], 10, replace=False)
    mask = mask_for(chosen, int(data["keys"].max()) + 1)
    # 10 of 4000 rows is under brute_force_fraction: hnsw and ivf take the exact scan
    assert 10 < index.config.brute_force_fraction * N

    scores, keys = index.search(data["queries"], K, allowed_keys=mask)
    true_scores, true_keys = exact_search(data["queries"], data["keys"], data["vectors"], K, mask[data["keys"]])
    assert np.isin(keys, chosen).all()
    assert all(set(row) == set(chosen.tolist()) for row in keys)
    assert np.array_equal(keys, true_keys)
    np.testing.assert_allclose(scores, true_scores, atol=1e-5)

    scores, keys = index.search(data["queries"][:5], 15, allowed_keys=mask)
    assert np.isin(keys[:, :10], chosen).all()
    assert (keys[:, 10:] == -1).all() and np.isneginf(scores[:, 10:]).all()


@pytest.mark.parametrize("kind, min_recall", [("flat", 1.0), ("hnsw", 0.95), ("ivf", 0.95)])
def test_allowed_keys_broad_filter_uses_the_index(built, data, kind: str, min_recall: float) -> None:
    index = built[kind]
    rng = np.random.default_rng(12)
    chosen = rng.choice(data["keys"], N // 5, replace=False)  # 20%: over brute_force_fraction
    mask = mask_for(chosen, int(data["keys"].max()) + 1)
    _, keys = index.search(data["queries"], K, allowed_keys=mask)
    _, truth = exact_search(data["queries"], data["keys"], data["vectors"], K, mask[data["keys"]])
    assert np.isin(keys, chosen).all()
    assert recall(keys, truth) >= min_recall


@pytest.mark.parametrize("kind", KINDS)
def test_allowed_keys_edge_masks(built, data, kind: str) -> None:
    index = built[kind]
    queries = data["queries"][:4]
    nothing = np.zeros(int(data["keys"].max()) + 1, dtype=bool)
    scores, keys = index.search(queries, K, allowed_keys=nothing)
    assert (keys == -1).all() and np.isneginf(scores).all()

    everything = np.ones(int(data["keys"].max()) + 1, dtype=bool)
    assert np.array_equal(index.search(queries, K, allowed_keys=everything)[1], index.search(queries, K)[1])

    # a mask shorter than the largest key: keys past its end are not allowed
    short = np.ones(1_000, dtype=bool)
    _, keys = index.search(queries, K, allowed_keys=short)
    assert ((keys >= 0) & (keys < 1_000)).all()


def test_allowed_keys_do_not_bring_back_deleted_keys(data) -> None:
    for kind in KINDS:
        index = build(kind, data["keys"], data["vectors"])
        chosen = data["keys"][:10]
        index.remove(chosen[:4])
        mask = mask_for(chosen, int(data["keys"].max()) + 1)
        _, keys = index.search(data["queries"][:3], K, allowed_keys=mask)
        assert (keys[:, :6] >= 0).all() and np.isin(keys[:, :6], chosen[4:]).all(), kind
        assert (keys[:, 6:] == -1).all(), kind


# ------------------------------------------------------------------- padding
@pytest.mark.parametrize("kind", KINDS)
def test_fewer_results_than_k_are_padded(data, kind: str) -> None:
    index = build(kind, data["keys"][:5], data["vectors"][:5])
    scores, keys = index.search(data["queries"][:3], 8)
    assert keys.shape == (3, 8)
    for row in keys:
        assert set(row[:5]) == set(data["keys"][:5].tolist())
    assert (keys[:, 5:] == -1).all() and np.isneginf(scores[:, 5:]).all()
    assert np.isfinite(scores[:, :5]).all()

    index.remove(data["keys"][:2])
    scores, keys = index.search(data["queries"][:3], 8)
    assert all(set(row[:3]) == set(data["keys"][2:5].tolist()) for row in keys)
    assert (keys[:, 3:] == -1).all() and np.isneginf(scores[:, 3:]).all()


def test_empty_index_returns_padding() -> None:
    index = VectorIndex(DIM)
    scores, keys = index.search(np.ones((2, DIM), dtype=np.float32), 4)
    assert keys.shape == (2, 4) and (keys == -1).all() and np.isneginf(scores).all()
    assert len(index) == 0 and index.n_dead == 0


# --------------------------------------------------------------- persistence
@pytest.mark.parametrize("kind", KINDS)
def test_save_load_round_trip(tmp_path: Path, data, kind: str) -> None:
    index = build(kind, data["keys"], data["vectors"], compact_ratio=1.0)
    rng = np.random.default_rng(21)
    index.remove(data["keys"][:50])
    index.add(data["keys"][50:60], unit_rows(rng, 10))  # some dead rows travel too
    mask = mask_for(data["keys"][::3], int(data["keys"].max()) + 1)

    manifest = index.save(tmp_path / "nested" / "text")
    assert manifest == {"kind": kind, "dim": DIM, "count": N - 50, "dead": 60}
    assert (tmp_path / "nested" / "text.faiss").is_file() and (tmp_path / "nested" / "text.npz").is_file()

    loaded = VectorIndex.load(tmp_path / "nested" / "text", index.config)
    assert loaded.kind == kind and loaded.dim == DIM
    assert len(loaded) == len(index) and loaded.n_dead == index.n_dead
    assert np.array_equal(np.sort(loaded.keys()), np.sort(index.keys()))
    for allowed in (None, mask):
        scores_a, keys_a = index.search(data["queries"], K, allowed_keys=allowed)
        scores_b, keys_b = loaded.search(data["queries"], K, allowed_keys=allowed)
        assert np.array_equal(keys_a, keys_b)
        assert np.array_equal(scores_a, scores_b)

    # the loaded index keeps working: an upsert and a delete
    loaded.add(data["keys"][100:101], data["vectors"][200:201])
    _, keys = loaded.search(data["vectors"][200:201], 2)
    assert set(keys[0].tolist()) == {data["keys"][100], data["keys"][200]}
    loaded.remove(data["keys"][200:201])
    _, keys = loaded.search(data["vectors"][200:201], 1)
    assert keys[0, 0] == data["keys"][100]


def test_load_default_config_keeps_saved_kind_and_takes_search_settings(tmp_path: Path, data) -> None:
    index = build("ivf", data["keys"][:2_000], data["vectors"][:2_000], ivf_nprobe=IndexConfig().ivf_nprobe)
    index.save(tmp_path / "image")
    loaded = VectorIndex.load(tmp_path / "image")  # default config says auto: the saved kind wins
    assert loaded.kind == "ivf"
    assert np.array_equal(loaded.search(data["queries"], K)[1], index.search(data["queries"], K)[1])
    # search settings come from the config given at load time
    narrower = VectorIndex.load(tmp_path / "image", IndexConfig(ivf_nprobe=7))
    assert narrower._index.nprobe == 7


def test_load_rejects_mismatched_files(tmp_path: Path, data) -> None:
    build("flat", data["keys"][:100], data["vectors"][:100]).save(tmp_path / "a")
    build("flat", data["keys"][:50], data["vectors"][:50]).save(tmp_path / "b")
    (tmp_path / "b.faiss").replace(tmp_path / "a.faiss")
    with pytest.raises(VectorIndexError, match="rebuild the index"):
        VectorIndex.load(tmp_path / "a")


# --------------------------------------------------------------- vectors_for
def test_vectors_for_known_unknown_and_deleted_keys(data) -> None:
    index = build("flat", data["keys"][:100], data["vectors"][:100])
    index.remove(data["keys"][5:6])
    asked = np.array([data["keys"][0], 999_999, data["keys"][5], data["keys"][99], -1])
    vectors, present = index.vectors_for(asked)
    assert vectors.shape == (5, DIM) and vectors.dtype == np.float32
    assert present.tolist() == [True, False, False, True, False]
    assert np.array_equal(vectors[0], data["vectors"][0])
    assert np.array_equal(vectors[3], data["vectors"][99])
    assert not vectors[[1, 2, 4]].any()

    vectors, present = index.vectors_for(np.array([], dtype=np.int64))
    assert vectors.shape == (0, DIM) and present.shape == (0,)


# ------------------------------------------------------------ bad arguments
@pytest.fixture()
def small_index(data) -> VectorIndex:
    return build("flat", data["keys"][:20], data["vectors"][:20])


Z = np.zeros
# (case id, a call on a 20-vector flat index, fragment of the message)
BAD_CALLS: list[tuple[str, Callable[[VectorIndex], object], str]] = [
    ("add_wrong_dim", lambda ix: ix.add([1], Z((1, 16))), "vectors: expected shape [n, 32], got [1, 16]"),
    ("add_wrong_dim_1d", lambda ix: ix.add([1], Z(31)), "vectors: expected shape [n, 32], got [31]"),
    ("add_3d", lambda ix: ix.add([1], Z((1, 1, DIM))), "vectors: expected shape [n, 32], got [1, 1, 32]"),
    ("add_repeated_keys", lambda ix: ix.add([1, 2, 1], Z((3, DIM))), "keys: repeated key in one add"),
    ("add_more_keys", lambda ix: ix.add([1, 2, 3], Z((2, DIM))), "keys: 3 keys for 2 vectors"),
    ("add_fewer_keys", lambda ix: ix.add([1], Z((2, DIM))), "keys: 1 keys for 2 vectors"),
    ("search_wrong_dim", lambda ix: ix.search(Z((2, 31)), 5), "queries: expected shape [n, 32], got [2, 31]"),
    ("search_k_zero", lambda ix: ix.search(Z((1, DIM)), 0), "k: must be >= 1, got 0"),
    ("search_k_negative", lambda ix: ix.search(Z((1, DIM)), -3), "k: must be >= 1, got -3"),
]


@pytest.mark.parametrize("case, call, fragment", BAD_CALLS, ids=[row[0] for row in BAD_CALLS])
def test_bad_call_raises_naming_the_argument(small_index: VectorIndex, data, case: str, call, fragment: str) -> None:
    before = small_index.search(data["queries"][:3], 5)
    with pytest.raises(VectorIndexError) as caught:
        call(small_index)
    assert fragment in str(caught.value)
    # nothing changed
    assert len(small_index) == 20 and small_index.n_dead == 0
    after = small_index.search(data["queries"][:3], 5)
    assert np.array_equal(before[1], after[1])


# (case id, IndexConfig / VectorIndex arguments, fragment of the message)
BAD_CONSTRUCTION = [
    ("index_type", {"index_type": "annoy"}, "index_type: unknown value 'annoy'"),
    ("index_type_case", {"index_type": "HNSW"}, "index_type: unknown value 'HNSW'"),
    ("compact_ratio_zero", {"compact_ratio": 0.0}, "compact_ratio: must be in (0, 1], got 0.0"),
    ("compact_ratio_negative", {"compact_ratio": -0.1}, "compact_ratio: must be in (0, 1], got -0.1"),
    ("compact_ratio_over_one", {"compact_ratio": 1.5}, "compact_ratio: must be in (0, 1], got 1.5"),
    ("exact_threshold", {"exact_threshold": 0}, "exact_threshold: must be >= 1, got 0"),
    ("hnsw_m", {"hnsw_m": 0}, "hnsw_m: must be >= 1, got 0"),
    ("hnsw_ef_search", {"hnsw_ef_search": -1}, "hnsw_ef_search: must be >= 1, got -1"),
    ("ivf_nprobe", {"ivf_nprobe": 0}, "ivf_nprobe: must be >= 1, got 0"),
]


@pytest.mark.parametrize("case, kwargs, fragment", BAD_CONSTRUCTION, ids=[row[0] for row in BAD_CONSTRUCTION])
def test_bad_config_raises_naming_the_argument(case: str, kwargs: dict, fragment: str) -> None:
    with pytest.raises(VectorIndexError) as caught:
        IndexConfig(**kwargs)
    assert fragment in str(caught.value)


@pytest.mark.parametrize("dim", [0, -4])
def test_bad_dim_raises(dim: int) -> None:
    with pytest.raises(VectorIndexError, match=rf"dim: must be >= 1, got {dim}"):
        VectorIndex(dim)


def test_compact_ratio_one_is_allowed() -> None:
    assert IndexConfig(compact_ratio=1.0).compact_ratio == 1.0


# ------------------------------------------------------------------ IVF-PQ
def clustered_rows(rng: np.random.Generator, n: int, dim: int = DIM, clusters: int = 50) -> np.ndarray:
    """Unit rows around a few dozen topics, as real embeddings bunch (uniform rows have no structure to index)."""
    centres = unit_rows(rng, clusters, dim)
    rows = centres[rng.integers(clusters, size=n)] + rng.standard_normal((n, dim)).astype(np.float32) * (0.6 / np.sqrt(dim))
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def test_auto_moves_to_ivfpq_past_its_threshold_with_recall_at_100_and_half_the_memory(tmp_path: Path) -> None:
    config = IndexConfig(index_type="auto", exact_threshold=500, ivfpq_threshold=3_000, pq_m=8)
    assert [config.resolve(n) for n in (499, 500, 2_999, 3_000)] == ["flat", "hnsw", "hnsw", "ivfpq"]
    assert IndexConfig().resolve(499_999) == "hnsw" and IndexConfig().resolve(500_000) == "ivfpq"  # the documented default
    rng = np.random.default_rng(7)
    n = 6_000
    keys = rng.permutation(np.arange(n, dtype=np.int64) * 5 + 3)
    vectors, queries = clustered_rows(rng, n), clustered_rows(rng, 40)
    index = VectorIndex(DIM, config)
    index.add(keys[:2_999], vectors[:2_999])
    assert index.kind == "hnsw"
    index.add(keys[2_999:], vectors[2_999:])  # grows past the threshold: rebuilt as IVF-PQ
    assert index.kind == "ivfpq" and isinstance(index._index, faiss.IndexIVFPQ) and len(index) == n
    assert index._index.pq.M == 8 and index._index.code_size <= 8 and index._vectors.dtype == np.float16  # <= 8 bytes of code, float16 copy
    np.testing.assert_allclose(index.vectors_for(keys[:5])[0], vectors[:5], atol=1e-3)

    _, truth = exact_search(queries, keys, vectors, 100)
    scores, found = index.search(queries, 100)
    assert recall(found, truth) >= 0.9
    assert np.all(np.diff(scores, axis=1) <= 1e-6)  # re-scored exactly, best first
    row_of = {int(key): row for row, key in enumerate(keys)}
    np.testing.assert_allclose(scores[0], vectors[[row_of[int(key)] for key in found[0]]] @ queries[0], atol=2e-3)

    gone = found[:, 0]  # deletes and filters hold as on every other index
    index.remove(gone)
    assert not set(gone.tolist()) & set(index.search(queries, 100)[1].ravel().tolist())
    mask = mask_for(keys[::3], int(keys.max()) + 1)
    assert set(index.search(queries, 20, allowed_keys=mask)[1].ravel().tolist()) - {-1} <= set(keys[::3].tolist())

    index.save(tmp_path / "text")
    loaded = VectorIndex.load(tmp_path / "text", config)
    assert loaded.kind == "ivfpq" and loaded._vectors.dtype == np.float16
    np.testing.assert_array_equal(loaded.search(queries, 100)[1], index.search(queries, 100)[1])
