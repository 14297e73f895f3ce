"""Catalog items and the loaders that read them from JSONL and CSV.

An item is ``item_id, title, description, image, price, category, brand,
attributes``. ``image`` is a file path (relative paths resolve against the
catalog file's folder), a ``data:image/...;base64,`` URI, or raw base64.

Bad lines: by default a line that fails validation is **skipped and
reported** -- :func:`load_catalog` returns a :class:`LoadReport` whose
``errors`` name the line, the field and the bad value, and the CLI prints
them. With ``strict=True`` the first bad line raises :class:`CatalogError`
instead. No line is ever dropped silently.
"""

from __future__ import annotations

import base64
import binascii
import csv
import io
import json
import math
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator

MAX_ID_LENGTH = 128
MAX_TEXT_LENGTH = 10_000
MAX_NAME_LENGTH = 200  # category and brand
CATALOG_FIELDS = ("item_id", "title", "description", "image", "price", "category", "brand", "attributes")
_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:\-]*")  # fullmatch: "$" would let a trailing newline through


class CatalogError(ValueError):
    """A catalog line, field or item that cannot be used; the message names it."""

    def __init__(self, message: str, *, line: int | None = None, field: str | None = None, value: Any = None):
        super().__init__(message)
        self.line = line
        self.field = field
        self.value = value


def _id_charset(value: str) -> str:
    if not _ID_PATTERN.fullmatch(value):
        raise ValueError("must start with a letter or digit and use only letters, digits and _ . : -")
    return value


# An item id as the loaders and the HTTP API accept it (one rule for both)
ItemId = Annotated[str, Field(min_length=1, max_length=MAX_ID_LENGTH), AfterValidator(_id_charset)]


class ItemFields(BaseModel):
    """An item's descriptive fields with their limits: the one schema that the loaders (:class:`Item`) and the
    HTTP API (``api.schemas.ItemFields``, strict and with a base64 picture) both validate against."""

    title: str = Field(min_length=1, max_length=MAX_TEXT_LENGTH)
    description: str = Field(default="", max_length=MAX_TEXT_LENGTH)
    price: float = Field(ge=0)
    category: str = Field(min_length=1, max_length=MAX_NAME_LENGTH)
    brand: str = Field(default="", max_length=MAX_NAME_LENGTH)
    attributes: dict[str, str | int | float | bool] = Field(default_factory=dict)

    @field_validator("title", "category")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value.strip()

    @field_validator("price", mode="before")
    @classmethod
    def _not_bool(cls, value: Any) -> Any:
        if isinstance(value, bool):  # JSON true would otherwise pass as 1.0
            raise ValueError("must be a number, not a boolean")
        return value

    @field_validator("price")
    @classmethod
    def _finite(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError("must be a finite number")
        return value


class Item(ItemFields):
    """One product. Validated on construction; errors name the field."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    item_id: ItemId
    image: str | None = None

    @field_validator("image")
    @classmethod
    def _empty_image_is_none(cls, value: str | None) -> str | None:
        return value or None

    def text_for_embedding(self) -> str:
        """The text the text encoder sees: the title, then the category, brand and
        named attributes that the title does not already say.

        The description is left out: it triples the tokens (and the build
        time) while the title and attributes carry what shoppers type."""
        title = self.title.casefold()
        extras = [self.category, self.brand]
        extras += [value for _, value in sorted(self.attributes.items()) if isinstance(value, str)]
        return ". ".join([self.title] + [extra for extra in extras if extra and extra.casefold() not in title])

    @property
    def colour(self) -> str:
        """The item's colour attribute (``colour``, or ``color``), "" when it has none."""
        value = self.attributes.get("colour", self.attributes.get("color", ""))
        return value.strip() if isinstance(value, str) else ""

    def to_json(self) -> dict[str, Any]:
        return self.model_dump()


def item_from_mapping(record: dict[str, Any], *, line: int | None = None) -> Item:
    """Validate one record into an :class:`Item`, raising :class:`CatalogError` naming the field."""
    if not isinstance(record, dict):
        raise CatalogError(f"{_where(line)}expected a JSON object, got {type(record).__name__}", line=line)
    try:
        return Item.model_validate(record)
    except ValidationError as exc:
        first = exc.errors()[0]
        field_name = ".".join(str(part) for part in first["loc"]) or None
        value = first.get("input")
        if first["type"] == "missing":
            message = f"{_where(line)}field '{field_name}' is required"
        elif first["type"] == "extra_forbidden":
            message = f"{_where(line)}unknown field '{field_name}' (allowed: {', '.join(CATALOG_FIELDS)})"
        else:
            message = f"{_where(line)}field '{field_name}' has bad value {_show(value)}: {first['msg']}"
        raise CatalogError(message, line=line, field=field_name, value=value) from None


@dataclass
class LoadReport:
    """What a load read: the valid items and every line it skipped, with why."""

    items: list[Item] = field(default_factory=list)
    errors: list[CatalogError] = field(default_factory=list)
    n_lines: int = 0

    @property
    def n_skipped(self) -> int:
        return len(self.errors)

    def summary(self) -> str:
        return f"{len(self.items)} items loaded, {self.n_skipped} lines skipped out of {self.n_lines}"


def load_catalog(path: str | Path, *, strict: bool = False, resolve_images: bool = True) -> LoadReport:
    """Read a ``.jsonl`` or ``.csv`` catalog.

    Relative image paths are made absolute against the catalog's folder (when
    ``resolve_images``) and must exist; a missing file is a bad line. A
    repeated ``item_id`` is a bad line too (the first one wins).
    """
    path = Path(path)
    if not path.exists():
        raise CatalogError(f"catalog file not found: {path}", field="path", value=str(path))
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson", ".json"):
        records = _read_jsonl(path)
    elif suffix == ".csv":
        records = _read_csv(path)
    else:
        raise CatalogError(f"unsupported catalog format {suffix!r} for {path}: use .jsonl or .csv", field="path", value=str(path))

    report = LoadReport()
    seen: set[str] = set()
    for line, record in records:
        report.n_lines += 1
        try:
            if isinstance(record, CatalogError):
                raise record
            item = item_from_mapping(record, line=line)
            if item.item_id in seen:
                raise CatalogError(f"line {line}: field 'item_id' has bad value {item.item_id!r}: repeated id", line=line, field="item_id", value=item.item_id)
            if resolve_images and item.image:
                item = item.model_copy(update={"image": _resolve_image(item.image, path.parent, line)})
        except CatalogError as exc:
            if strict:
                raise
            report.errors.append(exc)
            continue
        seen.add(item.item_id)
        report.items.append(item)
    return report


def write_jsonl(items: Iterable[Item], path: str | Path) -> int:
    """Write items as JSONL; returns how many."""
    n_written = 0
    with open(path, "w", encoding="utf-8") as out:
        for item in items:
            out.write(json.dumps(item.to_json(), ensure_ascii=False) + "\n")
            n_written += 1
    return n_written


def image_bytes(image: str) -> bytes:
    """The encoded bytes behind an item's ``image`` field (file path, data URI or base64)."""
    if image.startswith("data:"):
        _, _, payload = image.partition(",")
        return _b64decode(payload)
    if _looks_like_base64(image):
        return _b64decode(image)
    path = Path(image)
    if not path.is_file():
        raise CatalogError(f"field 'image' has bad value {_show(image)}: file not found", field="image", value=image)
    return path.read_bytes()


def _read_jsonl(path: Path) -> Iterator[tuple[int, Any]]:
    with open(path, "rb") as lines:
        for line_number, raw in enumerate(lines, start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield line_number, CatalogError(f"line {line_number}: not valid UTF-8 ({exc.reason} at byte {exc.start})", line=line_number)
                continue
            if not text.strip():
                continue
            try:
                yield line_number, json.loads(text)
            except json.JSONDecodeError as exc:
                yield line_number, CatalogError(f"line {line_number}: not valid JSON ({exc.msg} at column {exc.colno})", line=line_number)


def _read_csv(path: Path) -> Iterator[tuple[int, Any]]:
    """CSV rows: known columns map to fields; ``attributes`` may be a JSON object;
    any other column becomes an attribute."""
    with open(path, encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        if not reader.fieldnames or "item_id" not in reader.fieldnames:
            raise CatalogError(f"{path}: CSV header must name the column 'item_id' (got {reader.fieldnames})", field="item_id")
        for row in reader:
            line_number = reader.line_num
            try:
                yield line_number, _csv_record(row, line_number)
            except CatalogError as exc:
                yield line_number, exc


def _csv_record(row: dict[str, str | None], line: int) -> dict[str, Any]:
    record: dict[str, Any] = {}
    attributes: dict[str, Any] = {}
    for column, value in row.items():
        if column is None:
            raise CatalogError(f"line {line}: more values than header columns", line=line)
        if value is None or value == "":
            continue
        if column == "attributes":
            try:
                parsed = json.loads(value)
            except json.JSONDecodeError:
                raise CatalogError(
                    f"line {line}: field 'attributes' has bad value {_show(value)}: not a JSON object", line=line, field="attributes", value=value
                ) from None
            if not isinstance(parsed, dict):
                raise CatalogError(
                    f"line {line}: field 'attributes' has bad value {_show(value)}: not a JSON object", line=line, field="attributes", value=value
                )
            attributes.update(parsed)
        elif column in CATALOG_FIELDS:
            record[column] = value
        else:
            attributes[column] = value
    if attributes:
        record["attributes"] = attributes
    return record


def _resolve_image(image: str, base: Path, line: int) -> str:
    if image.startswith("data:") or _looks_like_base64(image):
        try:
            image_bytes(image)  # validates the base64 now, so the bad line is reported at load
        except CatalogError as exc:
            raise CatalogError(f"line {line}: {exc}", line=line, field="image", value=exc.value) from None
        return image
    path = Path(image)
    if not path.is_absolute():
        path = (base / path).resolve()
    if not path.is_file():
        raise CatalogError(f"line {line}: field 'image' has bad value {_show(image)}: file not found", line=line, field="image", value=image)
    return str(path)


def _looks_like_base64(text: str) -> bool:
    # A path has a dot (its extension) somewhere; base64 never does.
    return len(text) >= 64 and re.fullmatch(r"[A-Za-z0-9+/=\s]+", text) is not None


def _b64decode(payload: str) -> bytes:
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise CatalogError(f"field 'image' has bad value {_show(payload)}: not valid base64", field="image", value=payload[:40]) from None


def _where(line: int | None) -> str:
    return f"line {line}: " if line is not None else ""


def _show(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def items_to_csv(items: Iterable[Item]) -> str:
    """Items as CSV text (attributes as one JSON column)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(CATALOG_FIELDS))
    writer.writeheader()
    for item in items:
        row = item.to_json()
        row["attributes"] = json.dumps(row["attributes"]) if row["attributes"] else ""
        row["image"] = row["image"] or ""
        writer.writerow(row)
    return buffer.getvalue()
