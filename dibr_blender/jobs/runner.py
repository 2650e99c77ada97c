"""A job on a worker thread with progress, cancel and a latest-preview slot (no bpy).

The worker never touches Blender data: the modal operator polls ``state()`` from the main
thread and applies previews and the result there."""
from __future__ import annotations

import threading
import traceback
from dataclasses import dataclass
from typing import Any, Callable, Optional


@dataclass
class RunnerState:
    step: int
    total: int
    loss: float
    done: bool
    error: Optional[str]
    result: Any


class Runner:
    """Runs ``job(progress, should_stop, preview)`` on a daemon thread."""

    def __init__(self, job: Callable[..., Any]) -> None:
        self._job = job
        self._lock = threading.Lock()
        self._cancel = threading.Event()
        self._step, self._total, self._loss = 0, 0, float("nan")
        self._preview: Any = None
        self._done = False
        self._error: Optional[str] = None
        self._result: Any = None
        self._thread = threading.Thread(target=self._run, name="dibr-fit", daemon=True)

    def start(self) -> "Runner":
        self._thread.start()
        return self

    def cancel(self) -> None:
        self._cancel.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def join(self, timeout: Optional[float] = None) -> None:
        self._thread.join(timeout)

    def _progress(self, step: int, total: int, loss: float) -> None:
        with self._lock:
            self._step, self._total, self._loss = step, total, loss

    def _set_preview(self, value: Any) -> None:
        with self._lock:
            self._preview = value

    def take_preview(self) -> Any:
        """The newest preview not yet taken, or None."""
        with self._lock:
            value, self._preview = self._preview, None
            return value

    def _run(self) -> None:
        try:
            from .threads import fit_threads

            with fit_threads(interactive=True):  # leave Blender's UI a core
                result = self._job(self._progress, self._cancel.is_set, self._set_preview)
            with self._lock:
                self._result = result
        except Exception as exc:  # noqa: BLE001 - reported to the UI
            msg = str(exc) or type(exc).__name__
            with self._lock:
                self._error = msg if type(exc).__name__ == "SceneError" else f"{type(exc).__name__}: {msg}"
                self._trace = traceback.format_exc()
        finally:
            with self._lock:
                self._done = True

    def state(self) -> RunnerState:
        with self._lock:
            return RunnerState(self._step, self._total, self._loss, self._done, self._error, self._result)
