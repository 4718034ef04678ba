"""Where independent units of work run: in this process (``sequential``, the default) or as Ray tasks (``ray``).

A unit is a self-contained, picklable job (a trained model and the evaluations still missing for it) and a
function that does it and writes its cells into a shared folder; the transfer matrix and the comparison grid
both hand theirs to :func:`run_jobs`. Because both executors run the same function on the same jobs, a cluster
run and a laptop run produce and reuse the same cells. Under Ray each job asks for one GPU where the cluster has
GPUs, else one CPU; ``ray.init`` is called only when no Ray instance is connected (``RAY_ADDRESS`` joins one).
"""
from __future__ import annotations

from typing import Any, Callable, Sequence, TypeVar

from ..errors import InstaError

EXECUTORS = ("sequential", "ray")
K = TypeVar("K")
J = TypeVar("J")


def run_jobs(work: Callable[..., dict[str, Any]], keys: Sequence[K], make_job: Callable[[K], J | None],
             executor: str = "sequential", *, backend: Any = None, describe: Callable[[K], str] = str,
             log: Callable[[str], None] = lambda m: None, progress: bool = True,
             keep_going: bool = False) -> list[dict[str, Any]]:
    """Run ``work(job[, backend])`` for the job of every key (``make_job`` returns ``None`` when nothing is left
    to do for a key); returns what each call returned.

    ``sequential`` builds each job only when it is reached and passes ``backend`` (a test hook); ``ray`` builds
    them all, then runs them as Ray tasks (each worker makes its own backend). With ``keep_going`` a job whose
    input is unusable (an :class:`InstaError`) is logged and skipped instead of stopping the run.
    """
    if executor == "sequential":
        return _sequential(work, keys, make_job, backend, describe, log, progress, keep_going)
    if executor == "ray":
        return _ray(work, keys, make_job, describe, progress)
    raise InstaError(f"unknown executor {executor!r} (choose from {', '.join(EXECUTORS)})")


def _bar(total: int, progress: bool, unit: str = "model"):
    from ..util.helpers import progress_bar

    return progress_bar(total=total, desc="models", unit=unit, enabled=progress, dynamic_ncols=True)


def _sequential(work, keys, make_job, backend, describe, log, progress, keep_going) -> list[dict[str, Any]]:
    infos = []
    with _bar(len(keys), progress) as bar:
        for key in keys:
            name = describe(key)
            bar.set_postfix_str(name)
            try:
                job = make_job(key)
                info = None if job is None else (work(job, backend) if backend is not None else work(job))
            except InstaError as err:
                if not keep_going:
                    raise
                log(f"{name}: failed: {err} (left out; the other units go on)")
                infos.append({"error": str(err), "unit": name})
                bar.update(1)
                continue
            if info is not None:
                infos.append(info)
                log(f"{name}: {'trained + ' if info.get('trained') else ''}{info.get('evaluated', 0)} evaluation(s)")
            bar.update(1)
    return infos


def _ray(work, keys, make_job, describe, progress) -> list[dict[str, Any]]:
    try:
        import ray
    except ImportError:
        raise InstaError("executor 'ray' needs Ray: pip install 'insta[distributed]' (or 'ray')") from None
    if not ray.is_initialized():
        ray.init(ignore_reinit_error=True, include_dashboard=False, log_to_driver=False)
    gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
    remote = ray.remote(num_cpus=0 if gpus else 1, num_gpus=gpus, max_retries=1)(work)
    pending = {}
    for key in keys:
        job = make_job(key)
        if job is not None:
            pending[remote.remote(job)] = key
    infos = []
    with _bar(len(pending), progress) as bar:
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            key = pending.pop(done[0])
            try:
                infos.append(ray.get(done[0]))
            except ray.exceptions.RayTaskError as err:
                raise InstaError(f"ray task for {describe(key)} failed: {str(err).strip().splitlines()[-1]}") from None
            bar.update(1)
    return infos
