"""Mutual exclusion for changes to the registry's aliases (promote, rollback), in the registry.

MLflow has no compare-and-set on aliases, but its registry keeps registered-model names
unique (the primary key of its SQL store, also behind a tracking server): creating the
registered model ``<model>.gate-lock`` succeeds for exactly one caller, and deleting it
releases the lock. Its tags name the owner (host, pid, a random token) and the expiry.

A holder that died leaves its lock behind. A lock is stale once expired (``ttl_seconds``,
default 300 s; the work done under it takes about a second), or at once when its owner
ran on this host and its process is gone. Breaking a stale lock is itself exclusive: the
breaker first creates ``<model>.gate-lock.break-<token>``, so of two processes that find
the same stale lock only one deletes it. What remains: a holder frozen longer than the
TTL that wakes up still believes it holds the lock (the champion check it makes under the
lock, ``promotion._commit``, stops it moving an alias nobody expected to move).
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import time
from dataclasses import dataclass
from datetime import datetime, timezone

from bp_core.errors import PromotionInProgress

log = logging.getLogger(__name__)

LOCK_SUFFIX = ".gate-lock"
DEFAULT_TTL_SECONDS = 300.0
DEFAULT_WAIT_SECONDS = 30.0


def _error_code(exc: BaseException) -> str | None:
    return getattr(exc, "error_code", None)


@dataclass(frozen=True)
class Holder:
    """Who holds a lock entity, from its tags."""

    owner: str        # "<host>:<pid>:<token>"
    host: str
    pid: int
    token: str
    expires_at: float  # epoch seconds
    acquired_at: str

    @classmethod
    def from_tags(cls, tags: dict[str, str]) -> "Holder":
        host, pid, token = (tags.get("owner") or "?:0:?").rsplit(":", 2)
        return cls(owner=tags.get("owner", "?"), host=host, pid=int(pid) if pid.isdigit() else 0, token=token,
                   expires_at=float(tags.get("expires_at") or 0), acquired_at=tags.get("acquired_at", "?"))

    def stale(self, now: float) -> bool:
        """Expired, or its owner was a process of this host that no longer exists."""
        return now >= self.expires_at or (self.host == socket.gethostname() and not _alive(self.pid))


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RegistryLock:
    """``with RegistryLock(client, name):`` holds the gate's lock on model ``name``."""

    def __init__(self, client, model_name: str, *, ttl_seconds: float = DEFAULT_TTL_SECONDS,
                 wait_seconds: float = DEFAULT_WAIT_SECONDS, poll_seconds: float = 0.2) -> None:
        self._client = client
        self.name = model_name + LOCK_SUFFIX
        self._ttl = float(ttl_seconds)
        self._wait = float(wait_seconds)
        self._poll = float(poll_seconds)
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(6)}"
        self.held = False

    def __enter__(self) -> "RegistryLock":
        self.acquire()
        return self

    def __exit__(self, *exc_info) -> None:
        self.release()

    def acquire(self) -> None:
        """Take the lock, waiting up to ``wait_seconds`` for a live holder and breaking a stale one.

        Raises:
            PromotionInProgress: another live process held it for the whole wait.
            MlflowException: the registry failed.
        """
        deadline = time.monotonic() + self._wait
        waiting = False
        while True:
            if self._try_create(self.name, self.owner):
                self.held = True
                return
            holder = self._holder(self.name)
            if holder is None:
                continue  # released between our attempt and our look
            if holder.stale(time.time()):
                self._break(holder)
                continue
            if not waiting:
                log.info("waiting for the registry lock %s (held by %s since %s)", self.name, holder.owner,
                         holder.acquired_at)
                waiting = True
            if time.monotonic() >= deadline:
                raise PromotionInProgress(
                    f"another promote or rollback holds the registry lock (registered model {self.name!r}, "
                    f"owner {holder.owner}, since {holder.acquired_at}); try again, or if that process is gone, "
                    f"wait until {_iso(holder.expires_at)} or delete that registered model")
            time.sleep(self._poll)

    def verify(self) -> None:
        """Check the lock is still ours (it was not broken as stale) before changing anything.

        Raises:
            PromotionInProgress: another process holds it now.
        """
        holder = self._holder(self.name)
        if not self.held or holder is None or holder.owner != self.owner:
            self.held = False
            raise PromotionInProgress(f"lost the registry lock {self.name!r} (it was broken as stale; holder now: "
                                      f"{holder.owner if holder else 'none'}); nothing changed: run it again")

    def release(self) -> None:
        """Delete the lock entity if it is still ours (best effort: it expires anyway)."""
        if not self.held:
            return
        self.held = False
        try:
            holder = self._holder(self.name)
            if holder is not None and holder.owner == self.owner:
                self._client.delete_registered_model(self.name)
            else:
                log.warning("the registry lock %s was no longer ours when released (holder: %s)", self.name,
                            holder.owner if holder else "none")
        except Exception as exc:  # the lock expires by itself; the work under it is done
            log.warning("could not release the registry lock %s (%s: %s); it expires on its own",
                        self.name, type(exc).__name__, exc)

    # ---------------------------------------------------------------- internals

    def _try_create(self, name: str, owner: str) -> bool:
        now = time.time()
        tags = {"owner": owner, "expires_at": f"{now + self._ttl:.3f}", "acquired_at": _iso(now)}
        try:
            self._client.create_registered_model(
                name, tags=tags, description="bp-monitor promotion gate lock: held during a promote or rollback "
                                             "(normally for about a second); safe to delete if its owner is gone")
            return True
        except Exception as exc:
            # A name taken is the lock held; RESOURCE_DOES_NOT_EXIST happens when MLflow's
            # own "already exists" lookup races with the holder's release: retry.
            if _error_code(exc) in ("RESOURCE_ALREADY_EXISTS", "RESOURCE_DOES_NOT_EXIST"):
                return False
            raise

    def _holder(self, name: str) -> Holder | None:
        try:
            model = self._client.get_registered_model(name)
        except Exception as exc:
            if _error_code(exc) == "RESOURCE_DOES_NOT_EXIST":
                return None
            raise
        return Holder.from_tags(dict(model.tags or {}))

    def _break(self, stale: Holder) -> None:
        """Delete a stale lock, only if this process wins the right to break it."""
        breaker = f"{self.name}.break-{stale.token}"
        if not self._try_create(breaker, self.owner):
            other = self._holder(breaker)
            if other is not None and other.stale(time.time()):
                self._delete(breaker)  # a breaker that died mid-break
            else:
                time.sleep(self._poll)
            return
        try:
            current = self._holder(self.name)
            if current is not None and current.token == stale.token:
                log.warning("breaking the stale registry lock %s of %s (acquired %s)", self.name, stale.owner,
                            stale.acquired_at)
                self._delete(self.name)
        finally:
            self._delete(breaker)

    def _delete(self, name: str) -> None:
        try:
            self._client.delete_registered_model(name)
        except Exception as exc:
            if _error_code(exc) != "RESOURCE_DOES_NOT_EXIST":
                raise


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).isoformat(timespec="seconds")
