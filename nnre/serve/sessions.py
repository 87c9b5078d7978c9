"""Stateful sessions: a client-chosen id carries a recurrent model's state between requests.

A session belongs to one model as loaded (its bundle id) and one kind of use (text or
tensors); one request uses it at a time (another gets 409). It ends after ``timeout`` seconds
unused; at most ``cap`` live at once (one more is refused with 429, none is dropped silently).
A text session also keeps the last character drawn, which no step has read yet: the next
request feeds it before its own prompt, so the session reads as one text, every prompt and
every completion in order (a stop sequence included: the model wrote it).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from nnre import budget
from nnre.serve.errors import Busy, RequestError

ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


@dataclass(eq=False)
class Session:
    id: str
    model: str
    bundle_id: str
    kind: str  # "text" or "tensor"
    state: dict[str, np.ndarray] | None = None  # None: not started (the zero state)
    pending: list[int] = field(default_factory=list)
    seen: list[int] = field(default_factory=list)  # read since the zero state (a context's)
    busy: bool = False
    used: float = 0.0


class Sessions:
    def __init__(self, timeout: float = 600.0, cap: int = 1024,
                 clock: Callable[[], float] = time.monotonic, header: str = "") -> None:
        self.timeout = timeout
        self.cap = cap
        self.header = header  # behind replicas: the header naming the session (routing)
        self.clock = clock
        self._by_id: dict[str, Session] = {}

    def __len__(self) -> int:
        return len(self._by_id)

    @property
    def bytes(self) -> int:
        """What the kept states hold."""
        return sum(_size(s.state) for s in self._by_id.values())

    def check(self, more: int) -> None:
        """Busy (429) when keeping ``more`` bytes of state would pass the memory budget."""
        budget.check(self.bytes + more, "keeping the sessions' states", Busy)

    def open(self, sid: str, model: str, bundle_id: str, kind: str) -> Session:
        """The session for this request, new or continued, marked busy."""
        if not ID.fullmatch(sid):
            raise RequestError("a session id is 1 to 128 of A-Z a-z 0-9 . _ : - (use a "
                               "random one, such as a UUID: ids are not secret)",
                               param="session_id")
        self.sweep()
        s = self._by_id.get(sid)
        if s is None:
            if len(self._by_id) >= self.cap:
                raise Busy(f"{self.cap:,} sessions are open, the most this server keeps; "
                           "retry later or end one")
            s = self._by_id[sid] = Session(sid, model, bundle_id, kind)
        elif s.busy:
            raise RequestError(f"session {sid!r} is in use by another request", 409)
        elif s.model != model or s.kind != kind:
            raise RequestError(f"session {sid!r} belongs to {s.kind} requests of model "
                               f"{s.model!r}", 409)
        elif s.bundle_id != bundle_id:
            raise RequestError(f"session {sid!r} was started on an earlier version of model "
                               f"{model!r}, since reloaded; start a new session", 409)
        s.busy = True
        s.used = self.clock()
        return s

    def close(self, s: Session, state: dict[str, np.ndarray] | None = None,
              pending: list[int] | None = None, seen: list[int] | None = None) -> None:
        """Done with the request: keep its final state (None: unchanged, e.g. it failed)."""
        s.busy = False
        s.used = self.clock()
        if state is not None:
            s.state, s.pending, s.seen = state, list(pending or []), list(seen or [])
        elif s.state is None:  # a new session whose first request failed: nothing to keep
            self._by_id.pop(s.id, None)

    def sweep(self) -> None:
        """End the sessions unused for longer than the timeout."""
        now = self.clock()
        for sid in [k for k, s in self._by_id.items()
                    if not s.busy and now - s.used > self.timeout]:
            del self._by_id[sid]


def _size(state: dict[str, np.ndarray] | None) -> int:
    return sum(a.nbytes for a in state.values()) if state else 0
