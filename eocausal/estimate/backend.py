"""Where parallel estimation work runs: this machine (joblib threads) or a Dask cluster.

Two kinds of work are parallel in the estimators:

- the cross-fitting folds (:mod:`eocausal.estimate.nuisance`): independent fits, one
  per fold. Locally they run in threads; inside :func:`parallel_backend` with
  ``kind="dask"`` they become tasks on the cluster's workers (any process, any node);
- the forest's trees (econml's ``n_jobs``): econml grows the trees of one forest in
  place, in threads (``backend="threading"`` hard-coded, shared memory required), so
  they always run in the process that calls ``fit``, on that machine's cores, whatever
  the backend.

Results do not depend on the backend: every fold and every forest carries its own
seed, and each fold runs single-threaded inside (one BLAS/OpenMP thread), on both
backends.

Distributed is optional (``pip install "eocausal[dask]"``) and imported only when a
Dask backend is asked for.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

from joblib import parallel_config
from joblib.parallel import get_active_backend

from eocausal.errors import ConfigError

__all__ = ["check_backend", "dask_active", "fold_backend", "parallel_backend"]

_KINDS = ("local", "dask")


def check_backend(kind: str, scheduler: str | None) -> tuple[str, str | None]:
    """Validate a backend choice; returns ``(kind, scheduler)``.

    Parameters
    ----------
    kind : {"local", "dask"}
    scheduler : str or None
        A Dask scheduler address (``"tcp://10.0.0.1:8786"``) or ``"local"`` (a
        ``LocalCluster`` on this machine); required with ``kind="dask"``, not allowed
        with ``kind="local"``.
    """
    if kind not in _KINDS:
        raise ConfigError(
            f"`backend` must be one of {list(_KINDS)}. Got {kind!r}; use 'local' (this "
            "machine) or 'dask' (a Dask cluster, with `scheduler`)."
        )
    if kind == "dask":
        if not isinstance(scheduler, str) or not scheduler.strip():
            raise ConfigError(
                f"`backend: dask` needs `scheduler`, a scheduler address such as "
                f"'tcp://10.0.0.1:8786' or 'local' for a cluster on this machine. Got {scheduler!r}."
            )
        return kind, scheduler.strip()
    if scheduler is not None:
        raise ConfigError(
            f"`scheduler` is used only with `backend: dask`. Got scheduler={scheduler!r} with "
            "backend 'local'; set `backend: dask` or drop `scheduler`."
        )
    return kind, None


def _distributed():
    try:
        import distributed
    except ImportError:
        raise ConfigError(
            "`backend: dask` needs the `distributed` package, which is not installed; "
            'run `pip install "eocausal[dask]"` or use `backend: local`.'
        ) from None
    return distributed


@contextmanager
def parallel_backend(
    kind: str = "local", scheduler: str | None = None, *, connect_timeout: float = 30.0
) -> Iterator[Any]:
    """Run the estimators' parallel work (folds) on this machine or on a Dask cluster.

    Parameters
    ----------
    kind : {"local", "dask"}, default="local"
        ``"local"`` changes nothing (folds in threads). ``"dask"`` connects a
        ``distributed.Client`` and activates joblib's ``"dask"`` backend, so the
        cross-fitting folds run as tasks on the cluster's workers.
    scheduler : str, default=None
        With ``kind="dask"``: the scheduler address (``"tcp://host:8786"``), or
        ``"local"`` to start a ``distributed.LocalCluster`` on this machine for the
        duration of the block.
    connect_timeout : float, default=30.0
        Seconds to wait for the scheduler at ``scheduler`` to answer.

    Yields
    ------
    client : distributed.Client or None
        ``None`` for ``kind="local"``.

    Notes
    -----
    The forest's trees are grown in threads of the calling process in both cases
    (see the module docstring): a cluster speeds up the nuisance folds, not the
    forest. Estimates are identical on both backends for the same seed.

    Examples
    --------
    >>> from eocausal.estimate.backend import parallel_backend
    >>> with parallel_backend("local") as client:
    ...     client is None
    True
    """
    kind, scheduler = check_backend(kind, scheduler)
    if kind == "local":
        yield None
        return
    distributed = _distributed()
    with ExitStack() as stack:
        if scheduler == "local":
            cluster = stack.enter_context(distributed.LocalCluster())
            client = stack.enter_context(distributed.Client(cluster))
        else:
            try:
                client = distributed.Client(scheduler, timeout=connect_timeout)
            except OSError as err:
                raise ConfigError(
                    f"Could not reach the Dask scheduler at `scheduler` = {scheduler!r} ({err}); "
                    "start it (`dask scheduler`) and its workers (`dask worker ADDRESS`), or "
                    "use 'local'."
                ) from None
            stack.enter_context(client)
        stack.enter_context(parallel_config(backend="dask"))
        yield client


def dask_active() -> bool:
    """Whether joblib's active backend is the Dask one (inside ``parallel_backend("dask")``)."""
    if "distributed" not in sys.modules:  # joblib's dask backend needs it imported
        return False
    from joblib._dask import DaskDistributedBackend

    return isinstance(get_active_backend()[0], DaskDistributedBackend)


def fold_backend() -> str | None:
    """The joblib backend for cross-fitting folds: the active one under Dask, else threads.

    ``None`` lets :class:`joblib.Parallel` use the active (Dask) backend; ``"threading"``
    keeps folds in threads of this process, where nested BLAS/OpenMP pools are
    limited to one thread each.
    """
    return None if dask_active() else "threading"
