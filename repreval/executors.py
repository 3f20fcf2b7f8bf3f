"""Running a suite's units on Ray: one task per model variant (the variant is built once in its task), the
driver alone writing records, so resume, leaderboards, reports and failure isolation are those of a local run.

* Training happens once per configuration: the driver trains (or finds in the cache) every model a pending
  variant needs before any task starts; tasks then load the cached weights. (The cache is a directory: on a
  cluster, point ``$REPREVAL_CACHE`` at storage every node shares.)
* A worker that dies (``kill -9``, out of memory) has its task retried by Ray (``MAX_RETRIES``); a task that
  still fails has its units recorded as failed with the error, and the others finish.
* Ctrl-C on the driver keeps every record already written (each task's records are written when it ends).
"""

from __future__ import annotations

import os
import signal
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, NamedTuple

from .config import Suite
from .errors import ReprevalError
from .models import CACHE_ENV, cache_dir
from .plan import Plan, Unit, make_plan
from .plugins import Plugins, load_plugins
from .runner.records import error_text, failed_record

#: Folders of a task's output that travel back to the driver with its records (maps, explainer pictures)
DRAWINGS = ("maps", "pictures")
#: Retries Ray gives a task whose worker died
MAX_RETRIES = 3
#: Test hook: a folder; the first attempt of each task kills its own worker (``kill -9``) after leaving a mark
#: there, so tests can check that a killed worker's units are recomputed
FAULT_ENV = "REPREVAL_FAULT_KILL_WORKER_ONCE"


class Local(NamedTuple):
    """What the executor borrows from :mod:`repreval.runner` (handed over, not imported: the runner imports this
    module, and Ray pickles these functions by name into the workers)."""

    compute: Callable[..., None]  # runner.compute
    collected: Callable[[], Any]  # runner.MemorySink
    report: Callable[..., Any]  # runner.RunOutcome
    inputs: Callable[..., Any]  # runner.Inputs
    model_of: Callable[..., Any]
    resolve_device: Callable[[str], Any]


def _ray():
    try:
        import ray
    except ImportError:
        raise ReprevalError(
            "the ray executor needs Ray, which is not installed", fix='pip install -e ".[ray]" (or pip install ray)'
        ) from None
    return ray


def one_model(suite: Suite, model_id: str) -> Suite:
    """``suite`` with only ``model_id``: its plan has the same units (ids depend on the model's own fields)."""
    return replace(
        suite,
        models={model_id: suite.models[model_id]},
        model_variants={k: v for k, v in suite.model_variants.items() if k == model_id},
    )


def compute_task(
    suite: Suite, block: tuple[str, ...], model_id: str, unit_ids: list[str], threads: int, local: Local
) -> dict:
    """What one Ray task does: plan the one model, compute the given units, return their records."""
    import torch

    fault = os.environ.get(FAULT_ENV)
    if fault:
        mark = Path(fault) / f"{model_id}-{unit_ids[0]}"
        if not mark.exists():
            mark.parent.mkdir(parents=True, exist_ok=True)
            mark.write_text(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)
    torch.set_num_threads(max(1, threads))
    plugins = load_plugins(block=block)
    with tempfile.TemporaryDirectory() as scratch:  # drawings land here and travel back with the records
        single = replace(one_model(suite, model_id), output=Path(scratch))
        plan = make_plan(single, plugins)
        wanted = set(unit_ids)
        units = [unit for unit in plan.units if unit.id in wanted]
        if len(units) != len(wanted):
            raise RuntimeError(f"the worker planned {len(units)} of the {len(wanted)} units it was sent")
        sink, report = local.collected(), local.report(output=scratch, total=len(units))
        started = time.perf_counter()
        local.compute(plan, plugins, units, sink, report)
        files = {
            path.relative_to(scratch).as_posix(): path.read_bytes()
            for path in Path(scratch).rglob("*")
            if path.is_file() and path.relative_to(scratch).parts[0] in DRAWINGS
        }
    return {
        "records": sink.records,
        "files": files,
        "warnings": report.warnings,
        "seconds": time.perf_counter() - started,
        "pid": os.getpid(),
    }


def run_on_ray(
    plan: Plan, plugins: Plugins, pending: list[Unit], store, report, on_progress: Callable | None, local: Local
) -> None:
    """Compute ``pending`` as Ray tasks (one per model variant) and write their records as they finish."""
    ray = _ray()
    suite, executor = plan.suite, plan.suite.executor
    started_here = not ray.is_initialized()
    if started_here:
        try:
            ray.init(address=executor.address, include_dashboard=False, log_to_driver=False)
        except Exception as exc:
            first = (str(exc).strip().splitlines() or [""])[0][:200]
            raise ReprevalError(
                f"cannot start or join Ray ({type(exc).__name__}: {first})",
                fix="check --address (HOST:PORT of a running cluster), or leave it out for a local Ray runtime",
            ) from None
    try:
        _pretrain(plan, plugins, pending, local)
        groups: dict[tuple[str, str], list[Unit]] = {}
        for unit in pending:
            groups.setdefault((unit.model, unit.variant.label), []).append(unit)
        # Workers read trained models from the driver's cache (on a cluster: storage every node shares)
        environment = {CACHE_ENV: str(cache_dir())}
        if os.environ.get(FAULT_ENV):
            environment[FAULT_ENV] = os.environ[FAULT_ENV]
        task = ray.remote(compute_task).options(
            num_cpus=executor.cpus,
            num_gpus=executor.gpus,
            max_retries=MAX_RETRIES,
            **({"memory": executor.memory} if executor.memory else {}),
            runtime_env={"env_vars": environment},
        )
        threads = max(1, int(executor.cpus))
        running = {
            task.remote(suite, plugins.blocked, model_id, [u.id for u in units], threads, local): (
                model_id,
                variant,
                units,
            )
            for (model_id, variant), units in groups.items()
        }
        workers: set[int] = set()
        while running:
            (done,), _ = ray.wait(list(running), num_returns=1)
            model_id, variant, units = running.pop(done)
            try:
                result = ray.get(done)
            except Exception as exc:  # the task failed for good (after its retries): its units fail, others go on
                message = error_text(exc.cause if hasattr(exc, "cause") and exc.cause else exc)
                for unit in units:
                    store.write(failed_record(plan, unit, message))
                    report.failures.append((unit.describe(), message))
            else:
                workers.add(result["pid"])
                for name, content in result["files"].items():  # the task's drawings, written here
                    target = suite.output / name
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(content)
                described = {unit.id: unit.describe() for unit in units}
                for record in result["records"]:
                    store.write(record)
                    if record.status == "ok":
                        report.computed += 1
                    else:
                        report.failures.append((described[record.unit_id], record.error or ""))
                report.warnings += result["warnings"]
            if on_progress:
                on_progress(len(units), f"{model_id} · {variant} done on Ray ({len(workers)} workers so far)")
    except KeyboardInterrupt:
        for ref in list(locals().get("running", {})):
            ray.cancel(ref, force=True)
        raise
    finally:
        if started_here:
            ray.shutdown()


def _pretrain(plan: Plan, plugins: Plugins, pending: list[Unit], local: Local) -> None:
    """Train (or load from the cache) every model a pending variant needs, once, before the tasks start."""
    device = local.resolve_device(plan.suite.device)
    inputs = local.inputs(plan.suite, plugins, device)
    for model_id, config in plan.suite.models.items():
        if config.train is None:
            continue
        variants = {unit.variant for unit in pending if unit.model == model_id}
        if any(plan.variant(variant).needs_weights for variant in variants):
            local.model_of(plan, plugins, model_id, inputs, device).trained()
