"""Reading a shop's logged history: Metarank-style JSON lines and OBP-style logged-bandit tables.

Both become the same three records, in file order, plus a tally of what could not be read and why (:class:`Skips`):

- :class:`LoggedItem`: an item's attributes as of an ``item`` event;
- :class:`LoggedRanking`: a list of items shown to a user for a query (the slate, in display order), with each
  position's logged propensity when the format has one;
- :class:`LoggedInteraction`: a click, add-to-cart or purchase of an item, pointing at its ranking.

**Metarank JSON lines** (one event per line, ``event`` naming its kind; https://docs.metarank.ai, "Event format"):
``item`` (``item``, ``fields``: title, price, category, brand, color/colour, description, anything else kept as an
attribute), ``ranking`` (``id``, ``user``, ``session``, ``fields`` with an optional ``query``, ``items``: ``[{"id":
...}]`` in display order) and ``interaction`` (``id``, ``ranking``, ``user``, ``item``, ``type``). ``user`` events
are read and skipped (nothing here uses user attributes). Timestamps are epoch milliseconds (number or string) or
ISO 8601. Interaction types map to the service's: click; add_to_cart (also add-to-cart, cart, addtocart); purchase
(also buy, order, checkout).

**OBP-style tables** (CSV, one row per shown item, the Open Bandit Dataset's columns): ``item_id``, ``position``
(from 1, as in OBD; from 0 when a 0 appears), ``click`` (or ``reward``), ``propensity_score`` (optional), and
optionally ``timestamp``, ``user_id``, ``query``, ``add_to_cart``, ``purchase``. Rows with the same
``slate_id`` (or ``ranking_id``, ``round_id``) form one ranking; without such a column each row is a ranking of
one decision, as in OBD's published sample. Ids are derived from the rows' content, so a re-read gives the same ids.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

INTERACTION_TYPES = {
    "click": "click",
    "add_to_cart": "add_to_cart",
    "add-to-cart": "add_to_cart",
    "addtocart": "add_to_cart",
    "cart": "add_to_cart",
    "purchase": "purchase",
    "buy": "purchase",
    "order": "purchase",
    "checkout": "purchase",
}
ITEM_FIELDS = ("title", "description", "price", "category", "brand")
GROUP_COLUMNS = ("slate_id", "ranking_id", "round_id")
EXAMPLES_KEPT = 3


class HistoryFormatError(ValueError):
    """A history file this module cannot read at all (unknown format, a table without its required columns)."""


@dataclass
class LoggedItem:
    item_id: str
    ts: float
    fields: dict[str, Any]  # title, price, category, ... as the event gave them
    line: int


@dataclass
class LoggedRanking:
    ranking_id: str
    ts: float
    user_id: str
    session_id: str | None
    query: str | None
    items: list[str]  # the slate, in display order
    propensities: list[float] | None  # each position's logged probability (None: not logged)
    line: int


@dataclass
class LoggedInteraction:
    event_id: str
    ranking_id: str | None
    user_id: str
    item_id: str
    type: str  # click | add_to_cart | purchase
    ts: float
    line: int


@dataclass
class Skips:
    """What was not imported, per reason, with the first few examples (``line N: why``)."""

    counts: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def add(self, reason: str, example: str, n: int = 1) -> None:
        self.counts[reason] = self.counts.get(reason, 0) + n
        kept = self.examples.setdefault(reason, [])
        if len(kept) < EXAMPLES_KEPT:
            kept.append(example)

    @property
    def total(self) -> int:
        return sum(self.counts.values())


@dataclass
class History:
    items: list[LoggedItem] = field(default_factory=list)
    rankings: list[LoggedRanking] = field(default_factory=list)
    interactions: list[LoggedInteraction] = field(default_factory=list)
    skips: Skips = field(default_factory=Skips)
    lines: int = 0  # events read (lines of JSON, rows of a table)


def detect_format(path: Path) -> str:
    """``metarank`` for JSON lines (``.jsonl``, ``.json``, ``.ndjson``), ``obp`` for tables (``.csv``, ``.tsv``)."""
    suffixes = [suffix.lower() for suffix in Path(path).suffixes if suffix.lower() not in (".gz",)]
    if suffixes and suffixes[-1] in (".jsonl", ".json", ".ndjson"):
        return "metarank"
    if suffixes and suffixes[-1] in (".csv", ".tsv"):
        return "obp"
    raise HistoryFormatError(f"format: cannot tell the format of {Path(path).name!r} from its name; pass --format metarank or --format obp")


def timestamp_s(value: Any) -> float:
    """Seconds since the epoch from epoch milliseconds or seconds (number or string) or ISO 8601."""
    if isinstance(value, bool) or value is None:
        raise ValueError(f"timestamp: {value!r} is not a time")
    if isinstance(value, int | float) or (isinstance(value, str) and value.strip().lstrip("-").replace(".", "", 1).isdigit()):
        number = float(value)
        if not math.isfinite(number):
            raise ValueError(f"timestamp: {value!r} is not a time")
        return number / 1000.0 if abs(number) > 1e11 else number  # past 1e11 it must be milliseconds (year 5138 in seconds)
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.strip().replace("Z", "+00:00")).timestamp()
        except ValueError:
            pass
    raise ValueError(f"timestamp: {value!r} is neither epoch milliseconds nor ISO 8601")


def _fields(raw: Any) -> dict[str, Any]:
    """Metarank ``fields``: a list of ``{name, value}`` (or, as older exports write, one object)."""
    if raw is None:
        return {}
    if isinstance(raw, dict):
        return dict(raw)
    if isinstance(raw, list):
        return {entry["name"]: entry.get("value") for entry in raw if isinstance(entry, dict) and isinstance(entry.get("name"), str)}
    raise ValueError(f"fields: expected a list of {{name, value}}, got {type(raw).__name__}")


def _text(event: dict[str, Any], name: str, *, required: bool = True) -> str | None:
    value = event.get(name)
    if value is None or value == "":
        if required:
            raise ValueError(f"{name}: missing")
        return None
    if not isinstance(value, str | int):
        raise ValueError(f"{name}: expected a string, got {type(value).__name__}")
    return str(value)


def read_metarank(handle: TextIO, history: History, *, progress: Any = None) -> History:
    """Append every event of a Metarank JSON-lines file to ``history``; a line that cannot be read is skipped and
    counted (``bad_event``), never fatal."""
    for number, line in enumerate(handle, start=1):
        if progress is not None:
            progress.update(len(line))
        if not line.strip():
            continue
        history.lines += 1
        try:
            event = json.loads(line)
            if not isinstance(event, dict):
                raise ValueError(f"expected a JSON object, got {type(event).__name__}")
            kind = event.get("event")
            if kind == "ranking":
                history.rankings.append(_ranking(event, number))
            elif kind == "interaction":
                interaction = _interaction(event, number, history.skips)
                if interaction is not None:
                    history.interactions.append(interaction)
            elif kind == "item":
                history.items.append(LoggedItem(_text(event, "item"), timestamp_s(event.get("timestamp")), _fields(event.get("fields")), number))  # type: ignore[arg-type]
            elif kind == "user":
                history.skips.add("user_event", f"line {number}: user attributes are not used")
            else:
                raise ValueError(f"event: unknown kind {kind!r}; use item, ranking, interaction or user")
        except (ValueError, KeyError, TypeError) as exc:
            history.skips.add("bad_event", f"line {number}: {exc}")
    return history


def _ranking(event: dict[str, Any], line: int) -> LoggedRanking:
    items = event.get("items")
    if not isinstance(items, list) or not items:
        raise ValueError("items: a ranking needs a non-empty list of items")
    ids = [str(entry["id"]) if isinstance(entry, dict) else str(entry) for entry in items]
    query = _fields(event.get("fields")).get("query")
    return LoggedRanking(
        ranking_id=_text(event, "id"),  # type: ignore[arg-type]
        ts=timestamp_s(event.get("timestamp")),
        user_id=_text(event, "user", required=False) or "anonymous",
        session_id=_text(event, "session", required=False),
        query=str(query) if query not in (None, "") else None,
        items=ids,
        propensities=None,
        line=line,
    )


def _interaction(event: dict[str, Any], line: int, skips: Skips) -> LoggedInteraction | None:
    kind = str(event.get("type", "")).strip().lower()
    if kind not in INTERACTION_TYPES:
        skips.add("unknown_type", f"line {line}: interaction type {event.get('type')!r} is not click, add_to_cart or purchase")
        return None
    return LoggedInteraction(
        event_id=_text(event, "id"),  # type: ignore[arg-type]
        ranking_id=_text(event, "ranking", required=False),
        user_id=_text(event, "user", required=False) or "anonymous",
        item_id=_text(event, "item"),  # type: ignore[arg-type]
        type=INTERACTION_TYPES[kind],
        ts=timestamp_s(event.get("timestamp")),
        line=line,
    )


def read_obp_table(handle: TextIO, history: History, *, source: str = "", progress: Any = None) -> History:
    """Append the rankings and interactions of an OBP-style table to ``history`` (see the module docstring)."""
    sample = handle.read(4096)
    handle.seek(0)
    dialect = csv.Sniffer().sniff(sample, delimiters=",\t;") if sample else csv.excel
    reader = csv.DictReader(handle, dialect=dialect)
    columns = [name.strip() for name in reader.fieldnames or []]
    reward_column = "click" if "click" in columns else "reward" if "reward" in columns else None
    missing = [name for name in ("item_id", "position") if name not in columns] + ([] if reward_column else ["click (or reward)"])
    if missing:
        raise HistoryFormatError(f"columns: {source or 'the table'} lacks {', '.join(missing)}; it has {', '.join(columns) or 'none'}")
    group = next((name for name in GROUP_COLUMNS if name in columns), None)
    rows = []
    for number, row in enumerate(reader, start=2):  # line 1 is the header
        if progress is not None:
            progress.update(sum(len(value or "") + 1 for value in row.values()))
        history.lines += 1
        try:
            rows.append(_table_row(row, number, reward_column))
        except (ValueError, TypeError) as exc:
            history.skips.add("bad_event", f"line {number}: {exc}")
    one_based = bool(rows) and min(row["position"] for row in rows) >= 1
    seen: dict[str, int] = {}
    slates: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        if group is not None and row["group"]:
            key = f"{group}:{row['group']}"
        else:  # no round id: each row is its own ranking, named by its content (a repeat of a row gets a counter)
            digest = hashlib.sha1(row["raw"].encode()).hexdigest()[:16]
            seen[digest] = seen.get(digest, -1) + 1
            key = f"row:{digest}:{seen[digest]}"
        row["position"] -= 1 if one_based else 0
        slates.setdefault(key, []).append(row)
    for key, slate_rows in slates.items():
        _add_table_ranking(history, "obp:" + key, sorted(slate_rows, key=lambda row: row["position"]))
    return history


def _table_row(row: dict[str, str], line: int, reward_column: str) -> dict[str, Any]:
    def number(name: str, default: float | None = None) -> float | None:
        value = (row.get(name) or "").strip()
        if not value:
            return default
        parsed = float(value)
        if not math.isfinite(parsed):
            raise ValueError(f"{name}: {value!r} is not a finite number")
        return parsed

    item = (row.get("item_id") or "").strip()
    if not item:
        raise ValueError("item_id: missing")
    position = number("position")
    if position is None or position < 0 or position != int(position):
        raise ValueError(f"position: {row.get('position')!r} is not a position")
    propensity = number("propensity_score")
    if propensity is not None and not 0 < propensity <= 1:
        raise ValueError(f"propensity_score: {propensity} is outside (0, 1]")
    stamp = (row.get("timestamp") or "").strip()
    return {
        "item": item,
        "position": int(position),
        "outcomes": {
            kind: (number(name, 0.0) or 0.0) > 0 for kind, name in (("click", reward_column), ("add_to_cart", "add_to_cart"), ("purchase", "purchase"))
        },
        "propensity": propensity,
        "ts": timestamp_s(stamp) if stamp else 0.0,
        "user": (row.get("user_id") or "").strip() or "anonymous",
        "query": (row.get("query") or "").strip() or None,
        "group": next(((row.get(name) or "").strip() for name in GROUP_COLUMNS if (row.get(name) or "").strip()), ""),
        "raw": json.dumps(row, sort_keys=True),
        "line": line,
    }


def _add_table_ranking(history: History, ranking_id: str, rows: list[dict[str, Any]]) -> None:
    first = rows[0]
    positions = [row["position"] for row in rows]
    if positions != list(range(positions[0], positions[0] + len(rows))) or len(set(positions)) != len(positions):
        history.skips.add("bad_event", f"line {first['line']}: ranking {ranking_id} has positions {positions}, not one row per position")
        return
    propensities = [row["propensity"] for row in rows]
    ts = min(row["ts"] for row in rows)
    history.rankings.append(
        LoggedRanking(
            ranking_id=ranking_id,
            ts=ts,
            user_id=first["user"],
            session_id=None,
            query=first["query"],
            items=[row["item"] for row in rows],
            propensities=None if any(p is None for p in propensities) else propensities,
            line=first["line"],
        )
    )
    for row in rows:
        for kind, happened in row["outcomes"].items():
            if happened:
                history.interactions.append(
                    LoggedInteraction(f"{ranking_id}:{row['position']}:{kind}", ranking_id, first["user"], row["item"], kind, row["ts"] or ts, row["line"])
                )


def read_history(path: Path, fmt: str = "auto", *, progress: Any = None) -> History:
    """Read a history file (``fmt``: ``auto``, ``metarank`` or ``obp``)."""
    path = Path(path)
    fmt = detect_format(path) if fmt == "auto" else fmt
    if fmt not in ("metarank", "obp"):
        raise HistoryFormatError(f"format: unknown {fmt!r}; use metarank or obp")
    opener = _open_gzip if path.suffix.lower() == ".gz" else (lambda p: open(p, encoding="utf-8", newline=""))
    with opener(path) as handle:
        history = History()
        return read_metarank(handle, history, progress=progress) if fmt == "metarank" else read_obp_table(handle, history, source=path.name, progress=progress)


def _open_gzip(path: Path) -> TextIO:
    import gzip

    return gzip.open(path, "rt", encoding="utf-8", newline="")
