"""Built-in executors: ``local`` (this process) and ``ray`` (Ray tasks: a model variant each, or parts of one).

On Ray the driver writes every record, so resume, leaderboards, reports and failure isolation are those of a
local run:

* Nothing but the installed package is needed on a worker: the driver trains (or finds in its cache) every
  model a pending variant needs and loads every dataset the units read, once, and puts both in Ray's object
  store; tasks read only from there (explainers they train go to a scratch cache of their own).
* A worker that dies (``kill -9``, out of memory) has its task retried by Ray (``MAX_RETRIES``); a task that
  still fails has its units recorded as failed with the error, and the others finish.
* Ctrl-C on the driver keeps every record already written (each task's records are written when it ends; a
  split variant's attribution records when its last part ends).
* A large variant is split by input batches (then layers) over the workers; the driver joins the parts'
  per-input values in batch order into the records a local run writes.
"""

from __future__ import annotations

import socket

from repreval.api import (
    Executor,
    ExecutorJob,
    PluginOptionError,
    ReprevalError,
    TaskResult,
    UnitGroup,
    hookimpl,
    parse_bytes,
)

#: Retries Ray gives a task whose worker died
MAX_RETRIES = 3
#: Seconds a cluster's address has to answer before the run is refused
CONNECT_TIMEOUT = 10.0


class Local(Executor):
    """Every unit in this process, model by model, each variant built once."""

    name = "local"

    def run(self, job: ExecutorJob) -> None:
        job.compute_here()


class Ray(Executor):
    """Ray tasks on a local Ray runtime or the cluster at ``address`` (HOST:PORT); each task asks for ``cpus``,
    ``gpus`` and ``memory`` (bytes, or e.g. ``4GiB``). ``split``: tasks per model variant: ``auto`` (each model
    calibrated on the driver; a variant longer than its share of the run over the cluster's workers is split by
    input batches, then layers), or a number (1: one task per variant). An address in a suite is used only when
    the user allows it (``repreval.run`` refuses it otherwise); one that does not answer within
    :data:`CONNECT_TIMEOUT` seconds fails the run in one line."""

    name = "ray"

    def __init__(
        self,
        address: str | None = None,
        cpus: float = 1.0,
        gpus: float = 0.0,
        memory: int | str | None = None,
        split: int | str = "auto",
    ):
        for key, value in (("cpus", cpus), ("gpus", gpus)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise PluginOptionError(f"{key} must be a number of at least 0, got {value!r}")
        if address is not None and not isinstance(address, str):
            raise PluginOptionError(f"address must be HOST:PORT, got {address!r}")
        if split != "auto" and (isinstance(split, bool) or not isinstance(split, int) or split < 1):
            raise PluginOptionError(f"split must be auto or a number of tasks per variant (1 or more), got {split!r}")
        self.address, self.cpus, self.gpus = address, float(cpus), float(gpus)
        self.memory = None if memory is None else _bytes(memory)
        self.split = None if split == "auto" else int(split)

    def run(self, job: ExecutorJob) -> None:
        if job.device.startswith("cuda") and not self.gpus:
            raise ReprevalError(
                f"the suite computes on {job.device}, but each Ray task asks for no GPU (Ray hides the GPUs from it)",
                fix="executor: {kind: ray, gpus: 1} (a fraction, e.g. 0.25, lets tasks share one), or --device cpu",
            )
        ray = _ray()
        started_here = not ray.is_initialized()
        if started_here:
            if self.address:
                _reachable(self.address)
            _start(ray, self.address)
        running: dict = {}
        try:
            environment = job.prepare_tasks()
            job.split(self._workers(ray), self.split)
            shipped = ray.put(job.payload())  # once, in the object store: every task reads it, no file of ours
            task = ray.remote(_execute).options(
                num_cpus=self.cpus,
                num_gpus=self.gpus,
                max_retries=MAX_RETRIES,
                **({"memory": self.memory} if self.memory else {}),
                runtime_env={"env_vars": environment},
            )
            threads = max(1, int(self.cpus))
            running = {task.remote(job.task(group, threads), shipped): group for group in job.groups}
            workers: set[tuple[str, int]] = set()
            while running:
                (done,), _ = ray.wait(list(running), num_returns=1)
                group = running.pop(done)
                try:
                    result: TaskResult | None = ray.get(done)
                except Exception as exc:  # the task failed for good (after its retries): its units fail, others go on
                    job.fail(group, _on_worker(getattr(exc, "cause", None) or exc))
                    result = None
                else:
                    assert result is not None
                    workers.add((result.node, result.worker))
                    job.accept(group, result)
                job.progress(group.units, _finished(group, result, workers))
        except KeyboardInterrupt:
            for ref in running:
                ray.cancel(ref, force=True)
            raise
        finally:
            if started_here:
                ray.shutdown()

    def _workers(self, ray) -> int:
        """Tasks the cluster runs at once, by the resources each asks for."""
        resources = ray.cluster_resources()
        counts = [resources.get(name, 0.0) / need for name, need in (("CPU", self.cpus), ("GPU", self.gpus)) if need]
        return max(1, int(min(counts, default=resources.get("CPU", 1.0))))


def _finished(group: UnitGroup, result: TaskResult | None, workers: set[tuple[str, int]]) -> str:
    """The progress line of a finished task: where it ran and its throughput, and the workers seen so far."""
    nodes = len({node for node, _ in workers})
    seen = f"{len(workers)} workers on {nodes} nodes so far"
    if result is None:
        return f"{group.describe()} failed on Ray ({seen})"
    rate = f"{group.units / result.seconds:.2f} units/s" if result.seconds > 0 else "instant"
    where = f"node {result.node[:8]}, worker {result.worker}"
    return f"{group.describe()}: {group.units:.3g} units in {result.seconds:.1f} s ({rate}) on {where}; {seen}"


def _on_worker(exc: BaseException) -> BaseException:
    """A task's error, with the fix when the worker lacks a module the task needs (repreval, a plugin, ...)."""
    if isinstance(exc, ModuleNotFoundError):
        return RuntimeError(
            f"a Ray worker lacks the module {exc.name!r}: install repreval and the plugins the suite uses on every "
            "node, with the driver's versions (or give Ray a runtime_env with them)"
        )
    return exc


def _execute(task, shipped) -> TaskResult:
    """What a Ray worker runs: the host's self-contained task, on the payload Ray fetched from its object store."""
    return task(shipped)


def _ray():
    try:
        import ray
    except ImportError:
        raise ReprevalError(
            "the ray executor needs Ray, which is not installed", fix='pip install -e ".[ray]" (or pip install ray)'
        ) from None
    return ray


def _start(ray, address: str | None) -> None:
    try:
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        raise ReprevalError(
            f"cannot start or join Ray ({type(exc).__name__}: {first})",
            fix="check --address (HOST:PORT of a running cluster), or leave it out for a local Ray runtime",
        ) from None


def _reachable(address: str) -> None:
    """Fail in one line, within :data:`CONNECT_TIMEOUT` seconds, when nothing answers at ``address``
    (``HOST:PORT`` or ``ray://HOST:PORT``; ``auto`` and ``local`` are Ray's own and not probed)."""
    if address in ("auto", "local"):
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    host = host.strip("[]")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ReprevalError(f"Ray address {address!r} is not HOST:PORT", fix="e.g. --address 10.0.0.5:6379")
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT).close()
    except OSError as exc:
        raise ReprevalError(
            f"nothing answers at Ray address {address!r} ({type(exc).__name__})",
            fix="check --address (HOST:PORT of a running cluster), or leave it out for a local Ray runtime",
        ) from None


def _bytes(value: int | str) -> int:
    try:
        return parse_bytes(value, "memory")
    except ReprevalError as exc:
        raise PluginOptionError(exc.problem) from None


@hookimpl
def register_executors(register):
    """Register the ``local`` and ``ray`` executors."""
    register(Local)
    register(Ray)
