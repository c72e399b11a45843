"""The job types of a benchmark plan (render, train, ensemble, eval) and the JSON line --plan prints for each.

Every job has one hash, of everything that determines its output (benchmarks.engine.plan computes it);
its cache entry is named `{id}-{hash}` (benchmarks.engine.cache), so the plan and the cache agree by
construction.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from benchmarks import methods


@dataclass(frozen=True)
class RenderJob:
    """Render the benchmark's dataset of one DoF into the cache."""

    dof: int
    hash: str  # of the render config
    kind: str = "render"

    @property
    def id(self) -> str:
        return f"render-dof{self.dof}"

    needs: tuple[str, ...] = ()


@dataclass(frozen=True)
class Entry:
    """One row-maker of the results: a method's config (one variant of it) and, for seeded methods, a seed."""

    method: str
    config: Any  # the method's Config, one variant
    seed: int | None  # None: the method has no seed

    @property
    def label(self) -> str:
        return methods.get(self.method).label(self.config)


@dataclass(frozen=True)
class TrainJob:
    """Train one entry on one DoF's train split, at one learning rate of its sweep."""

    dof: int
    entry: Entry
    hash: str  # of the method, its config, the seed, the lr, the budget and the dataset
    needs: tuple[str, ...]
    lr: float | None = None  # this trial's learning rate (None: the method has none)
    trial: int | None = None  # index into the lr grid when --lr-trials > 1
    kind: str = "train"

    @property
    def id(self) -> str:
        slug = self.entry.label.replace(" ", "-").replace("=", "")
        return (f"train-{slug}-dof{self.dof}" + ("" if self.entry.seed is None else f"-s{self.entry.seed}")
                + ("" if self.trial is None else f"-lr{self.trial}"))

    @property
    def config(self) -> Any:
        """The method config this job trains: the entry's, at this trial's lr."""
        return self.entry.config if self.lr is None else replace(self.entry.config, lr=self.lr)


@dataclass(frozen=True)
class EvalJob:
    """Score every entry of one DoF on every evaluation split, gap and tau."""

    dof: int
    entries: tuple[Entry, ...]
    models: tuple[tuple[str, ...], ...]  # per entry: the ids of its TrainJobs (one per lr trial); () if it fits nothing
    hash: str
    needs: tuple[str, ...]
    kind: str = "eval"

    @property
    def id(self) -> str:
        return f"eval-dof{self.dof}"


@dataclass(frozen=True)
class EnsembleJob:
    """Train several TrainJobs of one method, DoF, seed and lr trial as one batched network (module.train_group).

    Its members keep their own ids, hashes and cache folders (cache.model_dir), so a member trained here
    and one trained alone by its TrainJob are interchangeable in the cache.
    """

    dof: int
    members: tuple[TrainJob, ...]
    hash: str  # of the members' hashes
    needs: tuple[str, ...]
    part: int | None = None  # which group of its method, DoF, seed and trial, when there are several (KL forms)
    kind: str = "train"

    @property
    def id(self) -> str:
        first = self.members[0]
        return (f"train-{first.entry.method}-ensemble-dof{self.dof}"
                + ("" if first.entry.seed is None else f"-s{first.entry.seed}")
                + ("" if first.trial is None else f"-lr{first.trial}")
                + ("" if self.part is None else f"-{self.part}"))


Job = RenderJob | TrainJob | EnsembleJob | EvalJob


def job_json(job: Job) -> dict[str, Any]:
    """The plan line of a job (run-benchmark --plan)."""
    line = {"id": job.id, "kind": job.kind, "dof": job.dof, "hash": job.hash, "needs": list(job.needs)}
    if isinstance(job, TrainJob):
        line |= {"method": job.entry.method, "label": job.entry.label, "seed": job.entry.seed, "lr": job.lr}
    if isinstance(job, EnsembleJob):
        first = job.members[0]
        line |= {"method": first.entry.method, "members": [m.id for m in job.members], "seed": first.entry.seed,
                 "lr": first.lr}
    return line
