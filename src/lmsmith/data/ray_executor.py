"""Ray as the data stage's executor: the same per-chunk functions the local process pool runs, as Ray
tasks, so a corpus that outgrows one machine is cleaned and tokenized by the same code on a cluster.

`connect` joins an existing cluster (`auto`, `ray://HOST:10001`, `HOST:6379`) or starts a local one;
`ordered_map` submits tasks with bounded work in flight and yields their results in submission order
(so outputs are byte-identical to the local executor's). A task whose worker dies is retried by Ray
(`max_retries`); the chunk functions write their files atomically (temp + rename, a `.done` marker
last), so a retried task never leaves a half-written or doubled output.

On a multi-node cluster the output directory must be on a filesystem every node sees (NFS, a
mounted bucket): chunk results are files, not objects.
"""

from __future__ import annotations

import socket
from collections import deque
from typing import Any, Callable, Iterable, Iterator
from urllib.parse import urlparse

from lmsmith.errors import LmsmithError

MAX_RETRIES = 3  # Ray retries a task this many times when its worker process dies


def _reachable(address: str, timeout: float = 5.0) -> bool:
    """A fast TCP probe, so a wrong address is one clear error instead of a long client retry loop."""
    u = urlparse(address if "://" in address else f"tcp://{address}")
    if not u.hostname or not u.port:
        return True  # let Ray judge addresses we cannot parse
    try:
        with socket.create_connection((u.hostname, u.port), timeout=timeout):
            return True
    except OSError:
        return False


def connect(address: str | None = None, num_cpus: int | None = None) -> dict[str, Any]:
    """Join the cluster at `address` (None/'local': start a local one with `num_cpus`); returns its resources."""
    try:
        import ray
    except ImportError:
        raise LmsmithError("the Ray executor needs Ray", "pip install 'lmsmith[ray]'") from None
    if ray.is_initialized():
        return ray.cluster_resources()
    quiet = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
    if address in (None, "", "local"):
        ray.init(num_cpus=num_cpus, **quiet)
        return ray.cluster_resources()
    hint = ("start one with `ray start --head` (then --ray-address auto), give the head's address, "
            "or leave --ray-address out to start a local cluster")
    if address != "auto" and not _reachable(address):
        raise LmsmithError(f"no Ray cluster answers at {address}", hint)
    try:
        ray.init(address=address, **quiet)
    except (ConnectionError, RuntimeError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise LmsmithError(f"cannot connect to the Ray cluster at {address}: {first}", hint) from None
    return ray.cluster_resources()


def ordered_map(fn: Callable[..., Any], args: Iterable[tuple], *, max_in_flight: int,
                on_submit: Callable[[], None] | None = None) -> Iterator[Any]:
    """`fn(*a)` for each `a` as Ray tasks, results in order; at most `max_in_flight` tasks outstanding."""
    import ray

    remote = ray.remote(max_retries=MAX_RETRIES)(fn)
    pending: deque = deque()
    try:
        for a in args:
            pending.append(remote.remote(*a))
            if on_submit:
                on_submit()
            while len(pending) >= max(1, max_in_flight):
                yield ray.get(pending.popleft())
        while pending:
            yield ray.get(pending.popleft())
    except ray.exceptions.RayTaskError as e:  # an error raised inside our function: re-raise it as itself
        cause = e.as_instanceof_cause()
        raise (cause.cause if hasattr(cause, "cause") and isinstance(cause.cause, Exception) else cause) from None
    finally:
        for ref in pending:
            ray.cancel(ref, force=True)


def cluster_cpus() -> int:
    import ray

    return int(ray.cluster_resources().get("CPU", 1))
