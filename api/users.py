"""``/v1/users``: erasing a user (privacy)."""

from __future__ import annotations

from typing import Any

from flask_openapi3 import APIBlueprint, Tag
from pydantic import BaseModel, Field

from api.common import SECURED, require_admin_key, service
from api.schemas import ErrorResponse

bp = APIBlueprint("users", __name__, url_prefix="/v1/users", abp_tags=[Tag(name="users", description="privacy")])


class UserPath(BaseModel):
    user_id: str = Field(min_length=1, max_length=256)


class EraseResponse(BaseModel):
    erased: bool = Field(description="false when the service knew nothing of this user (erasing is idempotent)")


@bp.delete("/<user_id>", responses={200: EraseResponse, 503: ErrorResponse}, security=SECURED, operation_id="erase_user")
@require_admin_key
def erase(path: UserPath) -> Any:
    """Forget a user: their profile, activity counters and pseudonym are deleted. Rankings and feedback already
    logged carry only the pseudonym, which nothing links to the user id any more; the user's next request
    starts afresh under a new pseudonym."""
    return {"erased": service().erase_user(path.user_id)}
