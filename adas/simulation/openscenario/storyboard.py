"""The storyboard's state machine: stories, acts, maneuver groups, maneuvers, events and actions.

Every element is in ``standbyState``, ``runningState`` or ``completeState`` and moves by the
standard's transitions (``startTransition``, ``endTransition``, ``stopTransition``,
``skipTransition``):

* a story starts with the storyboard; an act starts when its start trigger fires (at once
  without one) and is stopped by its stop trigger; maneuver groups and maneuvers start with
  their act / group; an event starts when its start trigger fires (at once without one);
* an element ends when all its children are complete (an action when its host says so); an event
  or maneuver group that has run fewer than ``maximumExecutionCount`` times goes back to standby
  instead of completing (a group's children are reset for the next run);
* event priorities act among the events of one maneuver: ``override`` stops the running ones
  (``overwrite``, its 1.0 name, is the same), ``skip`` is not started while another runs (a
  ``skipTransition``, the event stays in standby), ``parallel`` starts regardless;
* the storyboard's stop trigger stops everything and finishes the run.

Determinism: conditions evaluated in the pass at time ``t`` see the world at ``t`` and the
storyboard as it was when the pass began. A transition is visible to
``StoryboardElementStateCondition`` in exactly one pass: the first pass after it happened. So
an event that completes while the world advances to ``t`` (its last action reached its target)
can start a chained event in the pass at ``t``, and a transition made by a trigger in the pass at
``t`` is seen at ``t + step``; the document order of elements never changes an outcome.

Domain code: no dagster import.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Protocol

from adas.simulation.openscenario.conditions import ConditionContext, TriggerRuntime
from adas.simulation.openscenario.model import ActionDef, StoryDef, Trigger

STANDBY: Final[str] = "standbyState"
RUNNING: Final[str] = "runningState"
COMPLETE: Final[str] = "completeState"


@dataclass(frozen=True, slots=True)
class Transition:
    time: float
    element_type: str
    element: str  # the element's key: its name qualified by its parents' ("Story::Act::...::Event")
    transition: str


class Element:
    __slots__ = (
        "action",
        "actors",
        "children",
        "count",
        "key",
        "kind",
        "max_count",
        "name",
        "parent",
        "path",
        "priority",
        "start",
        "state",
        "stop",
    )

    def __init__(self, kind: str, name: str, key: str, path: str, parent: Element | None) -> None:
        self.kind = kind
        self.name = name
        self.key = key
        self.path = path
        self.parent = parent
        self.children: list[Element] = []
        self.state = STANDBY
        self.count = 0
        self.max_count = 1
        self.start: TriggerRuntime | None = None
        self.stop: TriggerRuntime | None = None
        self.priority = "parallel"
        self.action: ActionDef | None = None
        self.actors: tuple[str, ...] = ()  # a maneuver group's actors


class ActionHost(Protocol):
    """Starts and stops the actions (the player)."""

    def start_action(self, element: Element, t: float) -> bool:
        """Start the element's action at ``t``; True when it completed at once (teleport, step)."""
        ...

    def stop_action(self, element: Element) -> None: ...


class Storyboard:
    def __init__(
        self, stories: tuple[StoryDef, ...], stop: Trigger | None, ctx: ConditionContext, host: ActionHost
    ) -> None:
        self.host = host
        self.stories: list[Element] = []
        self.elements: dict[str, Element] = {}
        for story in stories:
            s = self._add("story", story.name, story.key, story.path, None)
            self.stories.append(s)
            for act in story.acts:
                a = self._add("act", act.name, act.key, act.path, s)
                a.start = TriggerRuntime(act.start, ctx, default=True) if act.start else None
                a.stop = TriggerRuntime(act.stop, ctx, default=False) if act.stop else None
                for group in act.groups:
                    g = self._add("maneuverGroup", group.name, group.key, group.path, a)
                    g.max_count = group.maximum_execution_count
                    g.actors = group.actors
                    for man in group.maneuvers:
                        m = self._add("maneuver", man.name, man.key, man.path, g)
                        for ev in man.events:
                            e = self._add("event", ev.name, ev.key, ev.path, m)
                            e.max_count = ev.maximum_execution_count
                            e.priority = "override" if ev.priority == "overwrite" else ev.priority
                            e.start = TriggerRuntime(ev.start, ctx, default=True) if ev.start else None
                            for act_def in ev.actions:
                                x = self._add("action", act_def.name, act_def.key, act_def.path, e)
                                x.action = act_def
        self.stop_trigger = TriggerRuntime(stop, ctx, default=False) if stop else None
        self.log: list[Transition] = []
        self._pending: dict[str, set[str]] = {}
        self._visible: dict[str, set[str]] = {}
        self._snapshot: dict[str, str] | None = None
        self.needs_snapshot = False  # set by the player when a state condition reads states
        self.finished = False
        self.finish_time: float | None = None

    def _add(self, kind: str, name: str, key: str, path: str, parent: Element | None) -> Element:
        el = Element(kind, name, key, path, parent)
        if parent is not None:
            parent.children.append(el)
        self.elements[key] = el
        return el

    # -- what conditions read -------------------------------------------------------------------

    def element_state(self, key: str) -> str:
        if self._snapshot is not None:
            return self._snapshot[key]
        return self.elements[key].state

    def transitioned(self, key: str, transition: str) -> bool:
        happened = self._visible.get(key)
        return happened is not None and transition in happened

    @property
    def complete(self) -> bool:
        return all(s.state == COMPLETE for s in self.stories)

    # -- the pass ---------------------------------------------------------------------------------

    def evaluate(self, t: float) -> None:
        """One pass at time ``t``: stop trigger, then every live start / stop trigger, top-down."""
        if self.finished:
            return
        self._visible, self._pending = self._pending, {}
        if self.needs_snapshot:
            self._snapshot = {k: el.state for k, el in self.elements.items()}
        if self.stop_trigger is not None and self.stop_trigger.evaluate(t):
            for story in self.stories:
                self._stop(story, t)
            self.finished = True
            self.finish_time = t
            return
        for story in self.stories:
            if story.state == STANDBY:
                self._start(story, t)
            if story.state != RUNNING:
                continue
            for act in story.children:
                if act.state == STANDBY and (act.start is None or act.start.evaluate(t)):
                    self._start(act, t)
                if act.stop is not None and act.state != COMPLETE and act.stop.evaluate(t):
                    self._stop(act, t)
                    continue
                if act.state != RUNNING:
                    continue
                for group in act.children:
                    if group.state == STANDBY:
                        self._start(group, t)
                    if group.state != RUNNING:
                        continue
                    for man in group.children:
                        if man.state != RUNNING:
                            continue
                        for ev in man.children:
                            if ev.state == STANDBY and (ev.start is None or ev.start.evaluate(t)):
                                self._start_event(ev, t)
        self._snapshot = None

    # -- transitions ------------------------------------------------------------------------------

    def _record(self, el: Element, transition: str, state: str, t: float) -> None:
        el.state = state
        self.log.append(Transition(t, el.kind, el.key, transition))
        self._pending.setdefault(el.key, set()).add(transition)

    def _start(self, el: Element, t: float) -> None:
        el.count += 1
        self._record(el, "startTransition", RUNNING, t)
        if el.kind == "maneuverGroup":
            for man in el.children:
                self._reset(man)
                self._start(man, t)
        elif el.kind == "act":
            for group in el.children:
                self._reset(group, counts=True)
                self._start(group, t)
        if not el.children and el.kind != "action":
            self._end(el, t)

    def _reset(self, el: Element, *, counts: bool = False) -> None:
        """Back to standby for a new run of the parent (no transition: the parent's start is the event)."""
        el.state = STANDBY
        if counts:
            el.count = 0
        if el.start is not None:
            el.start.reset()
        for child in el.children:
            self._reset(child, counts=True)

    def _start_event(self, ev: Element, t: float) -> None:
        siblings = [e for e in ev.parent.children if e is not ev and e.state == RUNNING]  # type: ignore[union-attr]
        if ev.priority == "skip" and siblings:
            self._record(ev, "skipTransition", STANDBY, t)
            if ev.start is not None:
                ev.start.reset()
            return
        if ev.priority == "override":
            for other in siblings:
                self._stop(other, t, propagate=False)
        ev.count += 1
        self._record(ev, "startTransition", RUNNING, t)
        for action in ev.children:
            action.count += 1
            self._record(action, "startTransition", RUNNING, t)
        for action in ev.children:
            if action.state == RUNNING and self.host.start_action(action, t):
                self._end(action, t)

    def action_done(self, action: Element, t: float) -> None:
        """The host's notice that a running action reached its end."""
        if action.state == RUNNING:
            self._end(action, t)

    def action_overridden(self, action: Element, t: float) -> None:
        """A later action took over the entity's domain: the standard stops the earlier one."""
        if action.state == RUNNING:
            self._record(action, "stopTransition", COMPLETE, t)
            self._check_parent(action, t)

    def _end(self, el: Element, t: float) -> None:
        if el.kind in ("event", "maneuverGroup") and el.count < el.max_count:
            self._record(el, "endTransition", STANDBY, t)
            for child in el.children:
                self._reset(child, counts=True)
            if el.start is not None:
                el.start.reset()
            return
        self._record(el, "endTransition", COMPLETE, t)
        self._check_parent(el, t)

    def _check_parent(self, el: Element, t: float) -> None:
        parent = el.parent
        if (
            parent is not None
            and parent.state == RUNNING
            and all(c.state == COMPLETE for c in parent.children)
        ):
            self._end(parent, t)

    def _stop(self, el: Element, t: float, *, propagate: bool = True) -> None:
        if el.state == COMPLETE:
            return
        if el.kind == "action" and el.state == RUNNING:
            self.host.stop_action(el)
        self._record(el, "stopTransition", COMPLETE, t)
        for child in el.children:
            self._stop(child, t, propagate=False)
        if propagate:
            self._check_parent(el, t)
