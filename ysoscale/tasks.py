"""Tally of independent tasks: a progress bar, the sum of their results, their failures.

Used by every distributed pass (``ysoscale infer`` partitions, the XP pass's star chunks).
Importing it does not import Dask; :meth:`TaskTally.gather` imports ``distributed`` when
it is called.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any


class TaskTally:
    """A progress bar over independent tasks, the sum of their results, and their failures.

    One task failing never stops the others (whatever finished is saved, and a re-run
    resumes); :meth:`finish` then raises one error listing the first failures. Subclasses
    say how a result is counted in :meth:`tally`.

    Parameters
    ----------
    noun : what a task is, in the failure message ("partition", "star chunk")
    bar : a tqdm bar (or anything with ``update`` and ``close``)
    """

    def __init__(self, noun: str, bar: Any) -> None:
        self.noun, self.bar = noun, bar
        self.errors: list[str] = []

    def tally(self, result: dict[str, Any]) -> int:
        """Add one task's result to the totals; return the bar's increment."""
        raise NotImplementedError

    def add(self, result: dict[str, Any]) -> None:
        self.bar.update(self.tally(result))

    def collect(self, call: Callable[[], dict[str, Any]]) -> None:
        """Run one task in this process, recording its result or its failure."""
        try:
            self.add(call())
        except Exception as error:  # the others go on; a re-run resumes
            self.errors.append(str(error))

    def gather(self, futures: Iterable[Any]) -> None:
        """Record Dask futures as they complete (results or failures), releasing each."""
        from distributed import as_completed

        for future in as_completed(list(futures)):
            if future.status == "error":
                self.errors.append(str(future.exception()))
            else:
                self.add(future.result())
            future.release()

    def finish(self) -> None:
        self.bar.close()
        if self.errors:
            shown = "\n  ".join(self.errors[:5])
            raise RuntimeError(
                f"{len(self.errors)} {self.noun}(s) failed (the others are saved; run the same "
                f"command again to resume):\n  {shown}"
            )


__all__ = ["TaskTally"]
