"""Where transfer units run: in this process (``sequential``, the default) or as Ray tasks (``ray``).

Both executors run the same :func:`insta.transfer.runner.execute_unit` on the same self-contained jobs and write
into the same cell folder, so a cluster run and a laptop run produce and reuse the same cells. Under Ray each
training asks for one GPU where the cluster has GPUs, else one CPU; ``ray.init`` is called only when no Ray
instance is connected yet (set ``RAY_ADDRESS`` to join a cluster).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

from ..errors import InstaError

if TYPE_CHECKING:  # pragma: no cover
    from .runner import TransferRun


def run_jobs(run: "TransferRun", units: Sequence[tuple[str | None, int | None]], executor: str,
             progress: bool = True) -> list[dict[str, Any]]:
    if executor == "sequential":
        return _sequential(run, units, progress)
    if executor == "ray":
        return _ray(run, units, progress)
    raise InstaError(f"unknown executor {executor!r} (choose from sequential, ray)")


def _bar(total: int, progress: bool):
    from tqdm import tqdm

    return tqdm(total=total, unit="model", desc="transfer", disable=not progress, dynamic_ncols=True)


def _sequential(run: "TransferRun", units, progress: bool) -> list[dict[str, Any]]:
    from .runner import execute_unit

    infos = []
    backend = run._backend()
    with _bar(len(units), progress) as bar:
        for source, seed in units:
            name = f"{source or 'base model'}{'' if seed is None else f' (seed {seed})'}"
            bar.set_postfix_str(name)
            try:  # one unusable source (no instances left after de-duplication, say) does not stop the run
                job = run.job(source, seed)
                info = execute_unit(job, backend) if job is not None else None
            except InstaError as err:
                run.log(f"{name}: failed: {err} (left out; the other units go on)")
                infos.append({"error": str(err), "source": source, "seed": seed})
                bar.update(1)
                continue
            if info is not None:
                infos.append(info)
                what = "trained + " if info.get("trained") else ""
                run.log(f"{name}: {what}{info['evaluated']} target(s) evaluated")
            bar.update(1)
    return infos


def _ray(run: "TransferRun", units, progress: bool) -> list[dict[str, Any]]:
    try:
        import ray
    except ImportError:
        raise InstaError("executor 'ray' needs Ray: pip install 'insta[distributed]' (or 'ray')") from None
    from .runner import execute_unit

    if not ray.is_initialized():
        ray.init(ignore_reinit_error=True, include_dashboard=False, log_to_driver=False)
    gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
    remote = ray.remote(num_cpus=0 if gpus else 1, num_gpus=gpus, max_retries=1)(execute_unit)
    jobs = [j for j in (run.job(s, seed) for s, seed in units) if j is not None]
    pending = {remote.remote(j): j for j in jobs}
    infos = []
    with _bar(len(jobs), progress) as bar:
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            job = pending.pop(done[0])
            try:
                infos.append(ray.get(done[0]))
            except ray.exceptions.RayTaskError as err:
                raise InstaError(f"ray task for {job.source or 'base'} (seed {job.seed}) failed: "
                                 f"{str(err).strip().splitlines()[-1]}") from None
            bar.update(1)
    return infos
