"""
What one pipeline call owns: its copy of the scheduler (timesteps, coefficients) and its interrupt flag, so that calls
of one pipeline from several threads never share a schedule, and a callback's `pipe._interrupt = True` stops its own
call only.
"""

import contextlib
import threading
from dataclasses import dataclass

from diffusers.schedulers.scheduling_utils import SchedulerMixin


@dataclass
class _CallState:
    scheduler: SchedulerMixin
    interrupt: bool = False


# per thread: the state of the pipeline call running in that thread (by pipeline id)
_CALLS = threading.local()


class PerCallState:
    """A mixin for `DiffusionPipeline`s: `_scheduler`, `_interrupt` and `num_timesteps` are the running call's."""

    def _running_call(self) -> "_CallState | None":
        """The state of this pipeline's call running in this thread, `None` outside a call."""
        return getattr(_CALLS, "by_pipeline", {}).get(id(self))

    @property
    def _scheduler(self) -> SchedulerMixin:
        """The scheduler of the call running in this thread (its own copy), or `self.scheduler` outside a call."""
        call = self._running_call()
        return call.scheduler if call is not None else self.scheduler

    @property
    def _interrupt(self) -> bool:
        """diffusers' interrupt flag, per call: a callback setting `pipe._interrupt = True` stops its own call only."""
        call = self._running_call()
        return call.interrupt if call is not None else self.__dict__.get("_interrupt_outside_calls", False)

    @_interrupt.setter
    def _interrupt(self, value: bool):
        call = self._running_call()
        if call is not None:
            call.interrupt = bool(value)
        else:
            self.__dict__["_interrupt_outside_calls"] = bool(value)

    @property
    def interrupt(self):
        return self._interrupt

    @contextlib.contextmanager
    def _call_state(self, scheduler: SchedulerMixin):
        """This thread's state of one call of this pipeline (its scheduler copy, its interrupt flag); re-entrant."""
        by_pipeline = _CALLS.__dict__.setdefault("by_pipeline", {})
        previous = by_pipeline.get(id(self))
        by_pipeline[id(self)] = _CallState(scheduler)
        try:
            yield
        finally:
            if previous is None:
                by_pipeline.pop(id(self), None)
            else:
                by_pipeline[id(self)] = previous

    @property
    def num_timesteps(self):
        """The steps of the call running in this thread (callbacks read it), else of the last call."""
        call = self._running_call()
        if call is not None and call.scheduler.timesteps is not None:
            return len(call.scheduler.timesteps)
        return self._num_timesteps
