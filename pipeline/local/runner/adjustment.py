"""What an adjustment of Beam's local runners is: named replacements of Beam internals, undoable.

An :class:`Adjustment` is a name and a function that, when called at install time, imports the
Beam internals it replaces and returns its :class:`Replacement` s. A replacement remembers the
stock value it replaced, so :meth:`Replacement.restore` puts Beam back as it was.

Example::

    >>> import types
    >>> owner = types.SimpleNamespace(threshold=10)
    >>> change = Replacement(owner, "threshold", 20)
    >>> change.apply(); owner.threshold
    20
    >>> change.restore(); owner.threshold
    10
"""
from __future__ import annotations

import gc
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

from apache_beam.options.pipeline_options import PipelineOptions

_MISSING = object()


class Change(Protocol):
    """One change to Beam or the interpreter that can be checked, applied and undone."""

    @property
    def key(self) -> tuple[int, str]:
        """What it changes; two changes with the same key change the same thing."""

    def exists(self) -> bool:
        """True if what it changes is there (the Beam version still has it)."""

    def apply(self) -> None: ...

    def restore(self) -> None: ...


@dataclass
class Replacement:
    """``owner.name = value``; :meth:`restore` puts back what ``owner`` itself held."""

    owner: Any
    name: str
    value: Any
    _stock: Any = field(default=_MISSING, init=False, repr=False)

    @property
    def key(self) -> tuple[int, str]:
        return id(self.owner), self.name

    def exists(self) -> bool:
        return hasattr(self.owner, self.name)

    def apply(self) -> None:
        self._stock = vars(self.owner).get(self.name, _MISSING)
        setattr(self.owner, self.name, self.value)

    def restore(self) -> None:
        if self._stock is _MISSING:
            delattr(self.owner, self.name)
        else:
            setattr(self.owner, self.name, self._stock)


@dataclass
class GcThresholds:
    """``gc.set_threshold(*thresholds)``; :meth:`restore` sets the thresholds it found."""

    thresholds: tuple[int, int, int]
    _stock: tuple[int, ...] = field(default=(), init=False, repr=False)

    @property
    def key(self) -> tuple[int, str]:
        return id(gc), "thresholds"

    def exists(self) -> bool:
        return True

    def apply(self) -> None:
        self._stock = gc.get_threshold()
        gc.set_threshold(*self.thresholds)

    def restore(self) -> None:
        gc.set_threshold(*self._stock)


@dataclass(frozen=True)
class Adjustment:
    """A named speed-up: ``changes(options)`` imports what it replaces and returns the changes."""

    name: str
    changes: Callable[[PipelineOptions], list[Change]]
