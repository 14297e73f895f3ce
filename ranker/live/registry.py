"""Policy versions: artifacts on disk, the serving pointer in Redis.

Artifacts live under ``<data_dir>/policies/<version>/`` (see
:mod:`ranker.ranking.policy`; on several machines that directory is shared storage).
Which version serves is one Redis key, ``{p}:policy:current``; the versions it
replaced are a list, ``{p}:policy:history``, newest first, so a rollback
returns to the previous one. Promote and rollback are WATCH/MULTI
transactions, so two admins racing cannot lose a history entry.

Every server process holds a :class:`PolicyCache` and hands it the pointer it
reads with each request's first round trip (a cheap GET, no restart, no
pub/sub thread to keep alive across gunicorn forks). A pointer naming a
version this process cannot load leaves the current one serving and is
reported, never a failed request. A server always starts: when the
pointer's version will not load (corrupt, pruned, trained on an older
feature schema), :meth:`PolicyCache.start` falls back through the rollback
history to the packaged starting policy, and says so (:attr:`PolicyCache.fallback`:
``/readyz`` and ``/metrics`` report it).

A fresh data directory starts with the packaged starting policy: PPO trained
300k steps in the demo shop simulation (``ranker/assets/starting_policy``; its
manifest records the training and the evaluation).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from ranker.errors import Kind, RequestError
from ranker.live.backend import key
from ranker.ranking.policy import MANIFEST_FILE, PolicyError, RankingPolicy

log = logging.getLogger(__name__)

STARTING_POLICY = Path(__file__).parents[1] / "assets" / "starting_policy"
VERSION_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")  # fullmatch: no trailing newline slips through


class RegistryError(RequestError):
    """A promote or rollback that cannot happen (``conflict``), or a version that does not exist (``not_found``)."""

    def __init__(self, message: str, *, field: str = "version", value: Any = None, kind: Kind = "conflict"):
        super().__init__(message, field=field, value=value, kind=kind)


@dataclass
class PolicyInfo:
    version: str
    parent: str | None
    created_at: str | None
    evaluation: dict[str, Any] | None
    current: bool

    def to_json(self) -> dict[str, Any]:
        return {"version": self.version, "parent": self.parent, "created_at": self.created_at, "evaluation": self.evaluation, "current": self.current}


def install_starting_policy(policies_dir: Path) -> str:
    """Copy the packaged starting policy into ``policies_dir`` (once); returns its version."""
    version = json.loads((STARTING_POLICY / MANIFEST_FILE).read_text())["version"]
    target = Path(policies_dir) / version
    if not (target / MANIFEST_FILE).exists():
        staging = Path(policies_dir) / f".{version}.{os.getpid()}.copying"  # several processes may start at once
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(STARTING_POLICY, staging)
        try:
            staging.rename(target)
        except OSError:  # another process got there first
            shutil.rmtree(staging, ignore_errors=True)
    return version


class PolicyRegistry:
    """Lists artifacts and moves the serving pointer."""

    def __init__(self, client: redis.Redis, policies_dir: Path, *, prefix: str = "ranker"):
        self.client = client
        self.policies_dir = Path(policies_dir)
        self.current_key = key(prefix, "policy", "current")
        self.history_key = key(prefix, "policy", "history")

    def path_of(self, version: str) -> Path:
        if not isinstance(version, str) or not VERSION_PATTERN.fullmatch(version):
            raise RegistryError(f"version: {version!r} is not a policy version name", value=version, kind="not_found")
        return self.policies_dir / version

    def versions(self) -> list[str]:
        """Versions on disk, oldest first (by creation time in the manifest)."""
        manifests = []
        for path in self.policies_dir.glob(f"*/{MANIFEST_FILE}"):
            try:
                manifest = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError):
                continue
            manifests.append((str(manifest.get("created_at", "")), path.parent.name))
        return [version for _, version in sorted(manifests)]

    def describe(self) -> list[PolicyInfo]:
        current = self.current()
        infos = []
        for version in self.versions():
            manifest = json.loads((self.policies_dir / version / MANIFEST_FILE).read_text())
            infos.append(PolicyInfo(version, manifest.get("parent"), manifest.get("created_at"), manifest.get("evaluation"), version == current))
        return infos

    def current(self) -> str | None:
        value = self.client.get(self.current_key)
        return value.decode() if isinstance(value, bytes) else value

    def history(self) -> list[str]:
        return [value.decode() for value in self.client.lrange(self.history_key, 0, -1)]

    def ensure_current(self) -> str:
        """Point at the starting policy when nothing serves yet (first start); returns the current version."""
        version = install_starting_policy(self.policies_dir)
        self.client.set(self.current_key, version, nx=True)
        return self.current() or version

    def load(self, version: str) -> RankingPolicy:
        """The policy ``version`` (404 when there is none, 409 when it would not load: schema, checksum)."""
        path = self.path_of(version)
        if not (path / MANIFEST_FILE).exists():
            raise RegistryError(f"version: no policy {version!r} under {self.policies_dir}", value=version, kind="not_found")
        try:
            return RankingPolicy.load(path)
        except PolicyError as exc:
            raise RegistryError(str(exc), value=version, kind="conflict") from None

    def promote(self, version: str) -> str:
        """Serve ``version`` from now on; the one it replaces goes on the history. Returns the previous version."""
        self.load(version)  # refuse what would not load before any server sees it
        with self.client.pipeline(transaction=True) as pipe:
            while True:
                try:
                    pipe.watch(self.current_key)
                    previous = pipe.get(self.current_key)
                    previous = previous.decode() if previous else None
                    if previous == version:
                        raise RegistryError(f"version: {version} is already serving", value=version)
                    pipe.multi()
                    if previous:
                        pipe.lpush(self.history_key, previous)
                    pipe.set(self.current_key, version)
                    pipe.execute()
                    return previous
                except redis.WatchError:
                    continue

    def prune(self, *, keep: int = 20, also_keep: Sequence[str] = ()) -> list[str]:
        """Retention: delete the oldest versions beyond the newest ``keep``; never the serving one,
        one on the rollback history, or the packaged starting policy. Returns what was deleted."""
        protected = {self.current(), *self.history(), *also_keep, json.loads((STARTING_POLICY / MANIFEST_FILE).read_text())["version"]}
        versions = self.versions()
        removable = [version for version in versions[: max(len(versions) - keep, 0)] if version not in protected]
        for version in removable:
            shutil.rmtree(self.policies_dir / version, ignore_errors=True)
        return removable

    def rollback(self) -> tuple[str, str]:
        """Return to the version served before the current one; returns (from, to)."""
        with self.client.pipeline(transaction=True) as pipe:
            while True:
                try:
                    pipe.watch(self.current_key, self.history_key)
                    current = pipe.get(self.current_key)
                    previous = pipe.lindex(self.history_key, 0)
                    if previous is None:
                        raise RegistryError("rollback: no earlier version to return to", field="version", value=current.decode() if current else None)
                    pipe.multi()
                    pipe.lpop(self.history_key)
                    pipe.set(self.current_key, previous)
                    pipe.execute()
                    return (current.decode() if current else ""), previous.decode()
                except redis.WatchError:
                    continue


class PolicyCache:
    """The policy this process serves; :meth:`get` swaps it when the pointer moved."""

    def __init__(self, policies_dir: Path):
        self.policies_dir = Path(policies_dir)
        self._lock = threading.Lock()
        self.version: str | None = None
        self.policy: RankingPolicy | None = None
        self.failed: dict[str, str] = {}  # version -> why it could not load
        self.wanted: str | None = None  # the last pointer seen

    @property
    def fallback(self) -> dict[str, Any] | None:
        """When this process serves another version than the pointer names because that one will not load: what was
        wanted, what serves, and why (None when it serves what the pointer names)."""
        if self.wanted is None or self.wanted == self.version or self.wanted not in self.failed:
            return None
        return {"wanted": self.wanted, "serving": self.version, "reason": self.failed[self.wanted], "failed": dict(self.failed)}

    def start(self, pointer: str, history: Sequence[str], starting: str) -> RankingPolicy:
        """The first policy: ``pointer``'s, else the newest of ``history`` that loads, else ``starting`` (the packaged
        starting policy). Never raises for a version that will not load; it is logged and reported."""
        self.wanted = pointer
        for version in (pointer, *history, starting):
            if version == self.version and self.policy is not None:
                break
            if version in self.failed:
                continue
            with self._lock:
                self._load(version)
            if self.version == version:
                break
        if self.policy is None:
            raise PolicyError(f"policy: none of {pointer}, the rollback history or the starting policy {starting} could be loaded: {self.failed}")
        if self.version != pointer:
            log.error("policy %s will not load (%s); serving %s instead", pointer, self.failed.get(pointer), self.version)
        return self.policy

    def get(self, pointer: str | None) -> RankingPolicy:
        """The policy for ``pointer`` (loaded once); the current one when ``pointer`` is None or unloadable."""
        if pointer:
            self.wanted = pointer
        if pointer and pointer != self.version and pointer not in self.failed:
            with self._lock:
                if pointer != self.version:
                    self._load(pointer)
        if self.policy is None:
            raise PolicyError("policy: no policy loaded and none could be loaded")
        return self.policy

    def _load(self, version: str) -> None:
        try:
            if not VERSION_PATTERN.fullmatch(version):
                raise PolicyError(f"policy pointer {version!r} is not a version name")
            policy = RankingPolicy.load(self.policies_dir / version)
        except Exception as exc:  # noqa: BLE001  (corrupt, truncated, pruned, another schema: never a failed start)
            log.error("policy %s cannot be loaded, still serving %s: %s", version, self.version, exc)
            self.failed[version] = str(exc)
            return
        self.policy, self.version = policy, version
        log.info("now serving policy %s", version)
