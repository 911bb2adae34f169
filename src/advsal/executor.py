"""Executors for the stage graph: where a stage's ``compute()`` runs.

Without an executor the store runs ``compute()`` inline. :class:`RayExecutor` ships the compute closure (with the
tensors and modules it captured) to a Ray task, which returns the payload with every tensor on the CPU; the driver
writes the run store, so workers need no shared filesystem, and a killed driver resumes from the store like a
local run. ``store.stage()`` then returns at once (a :class:`~advsal.store.PendingStage`), so stages created one
after another before any payload is read run in parallel; the store waits for a stage's inputs before
submitting it.

Each task asks for ``num_gpus`` GPUs (default 1 when the study's device is CUDA, else 0) and ``num_cpus`` CPUs
(default 1). Run directories (``RunStore``) never travel: a closure that captured the study's context gets
``None`` for it on the worker.
"""

from __future__ import annotations

from typing import Any

from .errors import ConfigError, StoreError

RAY_INSTALL = "pip install 'advsal[ray]' (or pip install 'ray>=2.9')"


def import_ray() -> Any:
    """The ``ray`` module, or a ConfigError naming the install command."""
    try:
        import ray
    except ImportError:
        raise ConfigError(f"the ray executor needs Ray: {RAY_INSTALL}") from None
    return ray


def init_ray(address: str | None = None, **kwargs: Any) -> None:
    """Connect to Ray at ``address`` (None: a local instance) unless this process is already connected."""
    ray = import_ray()
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False, **kwargs)


def _payload_on_cpu(compute: Any, cuda: bool) -> dict[str, Any]:
    """On a Ray worker: run ``compute()`` quietly and bring every tensor of its payload to the CPU."""
    import torch

    from .progress import set_quiet

    set_quiet(True)
    payload = compute()
    if not isinstance(payload, dict):
        return payload  # the store reports the wrong type
    return {k: v.detach().cpu() if isinstance(v, torch.Tensor) else v for k, v in payload.items()}


class RayExecutor:
    """Run stages as Ray tasks on the cluster at ``address`` (None: a local instance; "auto"; "ray://HOST:PORT").
    ``init`` options (e.g. ``num_cpus=2``) go to ``ray.init`` when this process is not yet connected."""

    def __init__(self, address: str | None = None, *, num_cpus: float = 1, num_gpus: float | None = None,
                 **init: Any):
        self.address, self.num_cpus, self.num_gpus, self.init = address, num_cpus, num_gpus, init
        self._task: Any = None
        self._cuda = False

    def start(self, device: Any = None) -> RayExecutor:
        """Connect to Ray and size the tasks for ``device`` (a torch device: GPUs for CUDA)."""
        ray = import_ray()
        init_ray(self.address, **self.init)
        from .store import RunStore

        ray.util.register_serializer(RunStore, serializer=lambda store: None, deserializer=lambda _: None)
        self._cuda = getattr(device, "type", None) == "cuda"
        gpus = self.num_gpus if self.num_gpus is not None else (1 if self._cuda else 0)
        self._task = ray.remote(_payload_on_cpu).options(num_cpus=self.num_cpus, num_gpus=gpus, max_retries=0)
        return self

    def submit(self, name: str, compute: Any) -> Any:
        if self._task is None:
            self.start()
        return self._task.remote(compute, self._cuda)

    def result(self, name: str, handle: Any) -> dict[str, Any]:
        ray = import_ray()
        try:
            return ray.get(handle)
        except ray.exceptions.RayTaskError as exc:
            cause = exc.cause if getattr(exc, "cause", None) is not None else exc
            first = str(cause).strip().splitlines()[0] if str(cause).strip() else ""
            raise StoreError(f"stage {name!r} failed on a Ray worker ({type(cause).__name__}: {first}); nothing "
                             "of it was stored — fix the cause and run again to resume from the finished "
                             "stages") from exc


__all__ = ["RAY_INSTALL", "RayExecutor", "import_ray", "init_ray"]
