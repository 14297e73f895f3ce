"""``/v1/items``: catalog upserts and deletes, searchable at once on every worker."""

from __future__ import annotations

from typing import Any

from flask_openapi3 import APIBlueprint, Tag

from api.common import SECURED, metrics, require_admin_key, service
from api.errors import ApiError
from api.schemas import BatchResponse, ErrorResponse, ItemFields, ItemOut, ItemPath, ItemsBatch
from ranker.catalog.items import CatalogError, Item

bp = APIBlueprint("items", __name__, url_prefix="/v1/items", abp_tags=[Tag(name="items", description="the catalog")])


def to_item(fields: ItemFields, item_id: str) -> Item:
    data = fields.model_dump(exclude={"item_id"})
    if data["image"] is not None and not data["image"].startswith("data:"):
        data["image"] = "data:image;base64," + data["image"]  # never read as a server path
    try:
        return Item(item_id=item_id, **data)
    except ValueError as exc:  # the catalog's own rules (id charset, blank strings)
        errors = getattr(exc, "errors", None)
        field = str(errors()[0]["loc"][0]) if callable(errors) else "item"
        raise ApiError(422, "invalid_item", f"{field}: {exc}", field) from None


def item_out(item: Item) -> dict[str, Any]:
    return {
        "item_id": item.item_id,
        "title": item.title,
        "description": item.description,
        "price": item.price,
        "category": item.category,
        "brand": item.brand,
        "has_image": item.image is not None,
        "attributes": item.attributes,
    }


def _count_items() -> None:
    metrics().items.set(len(service().engine))


@bp.put("/<item_id>", responses={200: ItemOut, 422: ErrorResponse, 503: ErrorResponse}, security=SECURED, operation_id="put_item")
@require_admin_key
def put_item(path: ItemPath, body: ItemFields) -> Any:
    """Insert or replace one item; it is searchable when this returns."""
    item = to_item(body, path.item_id)
    rejected = service().upsert_items([item])
    if rejected:
        error: CatalogError = rejected[0]
        raise ApiError(422, "invalid_image", str(error).replace(f"item {item.item_id!r}: ", "", 1), "image")
    _count_items()
    return item_out(item)


@bp.post("", responses={200: BatchResponse, 422: ErrorResponse, 503: ErrorResponse}, security=SECURED, operation_id="upsert_items")
@require_admin_key
def upsert_items(body: ItemsBatch) -> Any:
    """Insert or replace up to 1000 items. Items whose picture cannot be used are listed in `rejected`; the rest are stored."""
    items: list[Item] = []
    for index, fields in enumerate(body.items):
        try:
            items.append(to_item(fields, fields.item_id))
        except ApiError as exc:
            raise ApiError(exc.status, exc.code, f"items[{index}].{exc.message}", f"items[{index}].{exc.field}") from None
    rejected = service().upsert_items(items)
    _count_items()
    return {
        "upserted": len(items) - len(rejected),
        "rejected": [{"item_id": str(error.value), "field": "image", "message": str(error)} for error in rejected],
    }


@bp.get("/<item_id>", responses={200: ItemOut, 404: ErrorResponse}, operation_id="get_item")
def get_item(path: ItemPath) -> Any:
    """One item as stored."""
    item = service().get_item(path.item_id)
    if item is None:
        raise ApiError(404, "not_found", f"item_id: no item {path.item_id!r}", "item_id")
    return item_out(item)


@bp.delete("/<item_id>", responses={204: None, 404: ErrorResponse, 503: ErrorResponse}, security=SECURED, operation_id="delete_item")
@require_admin_key
def delete_item(path: ItemPath) -> Any:
    """Delete one item; it stops appearing in rankings at once."""
    if not service().delete_item(path.item_id):
        raise ApiError(404, "not_found", f"item_id: no item {path.item_id!r}", "item_id")
    _count_items()
    return "", 204
