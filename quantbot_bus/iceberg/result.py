"""What one poll of the scale-out bus did (:class:`PollResult`)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from ..objectstore.listing import BadKey, RunObject
from ..objectstore.validate import ObjectRun
from .rows import Rejected

#: Validated runs (with their footers) kept for polls that failed after registering them, at
#: most (the newest): the failed runs among older ones are not alerted.
MAX_UNREPORTED = 5000


@dataclass
class PollResult:
    """One poll: run ids registered by this daemon and by another one first (``already``),
    new rejections, the metadata keys still pending, and (on a full reconcile) the runs deleted
    from the bucket and so from the tables; ``updated``: registered runs whose changed objects
    replaced their old version (:mod:`quantbot_bus.iceberg.changes`)."""

    listed: int = 0
    registered: list[str] = field(default_factory=list)
    already: list[str] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)
    full: bool = False
    seconds: float = 0.0
    backlog: int = 0
    #: runs of the backlog this poll claimed (0 while other daemons hold all of it)
    claimed: int = 0
    updated: tuple[str, ...] = ()
    deleted: tuple[str, ...] = ()
    #: the valid runs this poll handed to registration, with their ``info`` (status, run_type,
    #: params, error): those in ``registered`` or ``already`` are in ``runs_d`` (alert facts)
    validated: list[ObjectRun] = field(default_factory=list)
    #: on a full reconcile, what its listing found (every run's metadata.json and bad keys)
    listing: list[RunObject | BadKey] = field(default_factory=list)

    @property
    def unchanged(self) -> list[str]:
        return self.already

    def committed(self) -> PollResult:
        """What of this (failed) poll is committed, to be reported later: its run ids,
        rejections, replaced and deleted runs, and the validated runs of those in the tables (at
        most :data:`MAX_UNREPORTED`); not its listing nor anything else it only looked at."""
        ids = set(self.registered) | set(self.already) | set(self.updated)
        return PollResult(
            registered=list(self.registered),
            already=list(self.already),
            rejected=list(self.rejected),
            updated=self.updated,
            deleted=self.deleted,
            validated=[v for v in self.validated if v.info.run_id in ids][-MAX_UNREPORTED:],
        )

    def merged(self, later: PollResult) -> PollResult:
        """``later`` with the commits of this (earlier, failed) poll before its own: run ids
        registered, rejections, replaced and deleted runs, and the validated runs they came
        from. The rest (listing, pending, backlog, timing) is ``later``'s."""
        return replace(
            later,
            registered=_unique(self.registered + later.registered),
            already=_unique(self.already + later.already),
            rejected=[*self.rejected, *later.rejected],
            updated=tuple(_unique([*self.updated, *later.updated])),
            deleted=tuple(_unique([*self.deleted, *later.deleted])),
            validated=[*self.validated, *later.validated][-MAX_UNREPORTED:],
        )


def _unique(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))
