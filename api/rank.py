"""``POST /v1/rank``: a slate for a user's query."""

from __future__ import annotations

from typing import Any

from flask_openapi3 import APIBlueprint, Tag

from api import limits
from api.common import SECURED, metrics, require_ingest_key, service
from api.schemas import BODY_ERRORS, ErrorResponse, RankRequest, RankResponse
from ranker.live.identity import pseudonymise
from ranker.retrieval.engine import Filters

bp = APIBlueprint("rank", __name__, url_prefix="/v1", abp_tags=[Tag(name="rank", description="rank products for a search")])


@bp.post("/rank", responses={200: RankResponse, **BODY_ERRORS, 401: ErrorResponse, 429: ErrorResponse}, security=SECURED, operation_id="rank")
@require_ingest_key
def rank(body: RankRequest) -> Any:
    """Rank products for a text and/or image query.

    Candidates come from FAISS over the catalog's embeddings; the serving
    policy orders them (sampled with the configured temperature unless
    `greedy`). The text's price, brand, colour and category intent is read
    first (`parse_query`, default true) and returned as `query.parsed`; a
    parsed price range or category filters the candidates unless nothing
    satisfies it (then `query.relaxed` names it). `explain: true` adds, per
    item, the split of its score into text similarity, image similarity and
    the policy's adjustment, and the policy's score at the item's placement as
    exact Shapley contributions of named feature groups with the item's top
    two reasons. Rate limited per API key and per user (429 with Retry-After).
    """
    svc = service()
    limits.check("rank_per_key", limits.key_identity())
    limits.check("rank_per_user", limits.hashed(pseudonymise(body.user_id, svc.config.user_key_secret)))  # not the hash that finds the pseudonym
    filters = None
    if body.filters is not None:
        categories = tuple(body.filters.categories) if body.filters.categories is not None else None
        filters = Filters(categories=categories, price_min=body.filters.price_min, price_max=body.filters.price_max)
    result = svc.rank(
        user_id=body.user_id,
        text=body.query.text,
        image=body.query.image_bytes(),
        num_results=body.num_results,
        num_candidates=body.num_candidates,
        filters=filters,
        session_id=body.session_id,
        page=body.page,
        temperature=0.0 if body.greedy else None,
        parse_query=body.parse_query,
        explain=body.explain,
    )
    metrics().rankings.labels("true" if result.logged else "false").inc()
    if result.experiment:
        metrics().experiment_rankings.labels(result.experiment["experiment_id"], result.experiment["arm"] or "interleaved").inc()
    metrics().serving(result.policy_version)
    return result.to_json(explain=body.explain)
