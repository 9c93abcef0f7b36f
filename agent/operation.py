"""One release operation at a time: fetch, verify, extract, switch `current`, signal, watch.

The order is what makes it safe: the new release is complete on disk, and Puma has been
checked able to do the restart asked for (its mode, and the kernel's permission to signal
it), before `current` moves. A second request while one runs gets "busy"; the same request
again is not a second operation.

A failure after `current` moved undoes the move: `current` and `previous` are put back
exactly, and a Puma that was already signalled is signalled again in the same mode, so it
restarts on the old release (a phased restart re-resolves `directory` when each phase
starts: the crash-looping slot of a stalled phase then boots the old code). The status says
`failed`, with `reverted` and `puma_restored`; a later request for the release that is
current again is then a no-op, so the controller's rollback does not restart Puma once more.

A release that cannot boot makes a phased restart stall rather than fail (the old workers keep
serving while one slot crash-loops). The watch counts the restart's new workers that exit
before it is done, and fails it once `boot_failures` have, well before the deadline; the wait
for the revert's restart does the same, so an old release that crash-loops too ends the wait
with `puma_restored` false.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from customer_friendly.agent import health, journal, puma, worker
from customer_friendly.agent.config import AgentConfig
from customer_friendly.agent.release import (
    Layout,
    Links,
    ReleaseError,
    current_release,
    install,
    links,
    previous_release,
    prune,
    restore,
    switch,
)
from customer_friendly.contract.agent_api import (
    DONE,
    FAILED,
    FETCHING,
    IDLE,
    RESTARTING,
    AgentStatus,
    ReleaseRequest,
    RestartOptions,
)

logger = logging.getLogger(__name__)


STEADY_SECONDS = 3.0
"""Without Puma's control app, how long the new workers must stay the same processes to count as
up: /proc cannot tell a booted worker from one about to crash, and Puma replaces a worker that
cannot boot with a new pid within seconds."""


PUMA_RETURN_SECONDS = 60.0
"""How long a request after a failure that killed Puma waits for the kubelet to start it again
(a container's first restart is immediate, the next ones back off 10 s, 20 s, 40 s)."""


class Busy(RuntimeError):
    """Another operation is running."""


def settled(status: AgentStatus, current: str | None, release: str) -> bool:
    """Whether a request for `release` has nothing to do. Pure.

    True when `release` is current and the last operation left the processes serving it: it
    finished, or it failed and everything it touched was put back (or it never touched anything).
    """
    if current != release:
        return False
    if status.state in (DONE, IDLE):
        return status.target in (None, release)
    if status.state == FAILED:
        return status.target != release and status.reverted is not False and status.puma_restored is not False
    return False


@dataclass
class Attempt:
    """What an operation has changed so far: what a failure must undo."""

    before: Links | None = None
    """The links as they were, once `current` is about to move."""
    view: puma.PumaView | None = None
    mode: str | None = None
    signalled: bool = False
    surge: bool = False
    """The phased restart ran with one worker more (RestartOptions.surge)."""


def _restart_timeout(view: puma.PumaView, mode: str, deadline_seconds: float, expected: int, ticks: int,
                     latest: puma.PumaView | None, stats: puma.Stats | None) -> puma.PumaError:
    """The error for a restart the deadline ended: how far it got, and what Puma last said, so the
    operator need not dig through the logs."""
    replaced = sum(w.start_ticks >= ticks for w in latest.workers) if latest else 0
    if mode == "phased":
        what = f"{replaced} of {expected} workers replaced; the old workers keep serving"
    else:
        booted = f", {stats.booted_workers} booted" if stats is not None else ""
        what = f"the new workers did not come up ({replaced} of {expected} restarted{booted})"
    tail = puma.boot_error_tail(view)
    return puma.PumaError(f"{mode} restart not done after {deadline_seconds:.0f}s: {what}"
                          + (f"; Puma said: {tail}" if tail else ""))


class Agent:
    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        self.layout = Layout(config.code_path)
        self.limits = config.limits
        self._lock = threading.Lock()
        self._status = AgentStatus()
        self._thread: threading.Thread | None = None
        self._asked: dict[str, int] = {}
        self._signalled: dict[str, int] = {}
        self._restored_ticks: int | None = None
        """When `current` was last put back by a failure (boot ticks): a Puma master started after
        that booted on the restored release."""

    # --- queries ----------------------------------------------------------------------------

    def report(self) -> AgentStatus:
        """The status the API answers with (contract.agent_api), read afresh from the volume and /proc."""
        with self._lock:
            status, asked = self._status, dict(self._asked)
        try:
            seen = {**puma.locate(self.config.puma_pidfile).as_dict(), **status.puma}
        except puma.PumaError as err:
            seen = {"error": str(err)}
        return replace(status, asked=asked, puma=seen, release=current_release(self.layout),
                       previous=previous_release(self.layout))

    def status(self) -> dict[str, Any]:
        """`report()` in its JSON form, with `signalled`: how many restarts this agent started onto
        each release (a bring-back after a failure counts for the old release). With `asked`, it
        lets a test check that no pod was ever signalled twice for one release."""
        with self._lock:
            signalled = dict(self._signalled)
        return {**self.report().to_json(), "signalled": signalled}

    def _count_signal(self, release: str | None) -> None:
        if release is not None:
            with self._lock:
                self._signalled[release] = self._signalled.get(release, 0) + 1

    def running(self) -> bool:
        with self._lock:
            return self._status.state in (FETCHING, RESTARTING)

    # --- commands ---------------------------------------------------------------------------

    def start(self, request: ReleaseRequest) -> bool:
        """Start an operation; False when it is a no-op (already there, or already under way)."""
        with self._lock:
            # Counted so that a controller restart can be checked never to ask twice.
            self._asked[request.release] = self._asked.get(request.release, 0) + 1
            state = self._status
            if state.state in (FETCHING, RESTARTING):
                if state.target == request.release:
                    return False
                raise Busy(f"busy: {state.state} release {state.target}")
            if settled(state, current_release(self.layout), request.release):
                if state.state == FAILED:  # after a revert: the controller's rollback finds it done
                    self._status = AgentStatus(state=DONE, target=request.release, finished_at=time.time(),
                                               note=f"release {request.release} is current again after the "
                                                    f"failed release {state.target}: nothing to do")
                return False
            lost = state.state == FAILED and state.reverted and state.puma_restored is False
            recovering = self._restored_ticks if lost and current_release(self.layout) == request.release else None
            self._status = AgentStatus(state=FETCHING, target=request.release, restart=request.options.restart,
                                       started_at=time.time())
        self._thread = threading.Thread(target=self._run, args=(request, False, recovering), name="cfo-operation",
                                        daemon=True)
        self._thread.start()
        return True

    def rollback(self, options: RestartOptions | None = None) -> str:
        """Back to the previous release, with the restart settings of a /v1/release request."""
        previous = previous_release(self.layout)
        if previous is None:
            raise ReleaseError("nothing to roll back to: no previous release on this pod")
        request = ReleaseRequest(previous, "", options or RestartOptions())
        with self._lock:
            if self._status.state in (FETCHING, RESTARTING):
                raise Busy(f"busy: {self._status.state} release {self._status.target}")
            self._status = AgentStatus(state=RESTARTING, target=previous, restart=request.options.restart,
                                       started_at=time.time())
        self._thread = threading.Thread(target=self._run, args=(request, True), name="cfo-rollback", daemon=True)
        self._thread.start()
        return previous

    def resume(self) -> bool:
        """At start: finish the restart that this agent's previous process signalled and did not
        see to its end (journal.py). True when it is being finished; the status says restarting
        to that release until then, so the controller waits instead of counting the pod done."""
        record = journal.read(self.layout.root)
        if record is None:
            return False
        view = puma.find_puma(puma.read_processes(), record.master_pid)
        if (view is None or view.master.start_ticks != record.master_ticks
                or current_release(self.layout) != record.release):
            # Puma was started again since (on `current`, with its own worker count), or the links
            # were put back: nothing of that restart is left to finish.
            journal.remove(self.layout.root)
            return False
        logger.info("finishing the %s restart to %s that the agent's previous process signalled", record.mode,
                    record.release)
        with self._lock:
            self._status = AgentStatus(state=RESTARTING, target=record.release, restart=record.mode,
                                       started_at=time.time(),
                                       note="finishing the restart that the agent's previous process signalled")
        self._thread = threading.Thread(target=self._finish, args=(record,), name="cfo-resume", daemon=True)
        self._thread.start()
        return True

    def _finish(self, record: journal.Restart) -> None:
        deadline = time.monotonic() + max(record.deadline_at - time.time(), 5.0)
        try:
            latest = self._wait_restarted(record, deadline)
            if record.surge and len(latest.workers) > record.expected:
                self._end_surge(latest, record.expected, deadline)
            if self.config.health_url:
                health.wait_until_healthy(self.config.health_url, deadline)
            self._update(state=DONE, finished_at=time.time())
            logger.info("release %s served by every worker (restart finished after an agent restart)",
                        record.release)
        except (puma.PumaError, OSError, ValueError) as err:
            logger.warning("the restart to %s did not finish: %s", record.release, err)
            self._update(state=FAILED, error=f"the {record.mode} restart to {record.release} that the agent's "
                                             f"previous process signalled did not finish: {err}",
                         finished_at=time.time())
        finally:
            journal.remove(self.layout.root)

    def _wait_restarted(self, record: journal.Restart, deadline: float) -> puma.PumaView:
        """Until every worker is new and the same processes for STEADY_SECONDS, with the surge
        worker (before its TTOU) or without it (the TTOU was sent before the agent died)."""
        sizes = {record.expected + 1 if record.surge else record.expected, record.expected}
        steady: tuple[frozenset[int], float] = (frozenset(), time.monotonic())
        while time.monotonic() < deadline:
            latest = puma.find_puma(puma.read_processes(), record.master_pid)
            if latest is None:
                raise puma.PumaError(f"Puma (pid {record.master_pid}) exited during the {record.mode} restart")
            pids = frozenset(w.pid for w in latest.workers)
            if pids != steady[0]:
                steady = (pids, time.monotonic())
            if (len(pids) in sizes and puma.restarted_since(latest, record.signal_ticks, len(pids))
                    and time.monotonic() - steady[1] >= STEADY_SECONDS):
                return latest
            time.sleep(0.2)
        raise puma.PumaError("not done by its deadline")

    def wait(self, timeout: float | None = None) -> None:
        if self._thread:
            self._thread.join(timeout)

    # --- the work ---------------------------------------------------------------------------

    def _update(self, **changes: Any) -> None:
        with self._lock:
            self._status = replace(self._status, **changes)

    def _run(self, request: ReleaseRequest, rollback: bool = False, recovering: int | None = None) -> None:
        """`recovering`: the request is for the release `current` was put back to (at these boot
        ticks) by a failure during which Puma died; see `_restart_puma`."""
        attempt = Attempt()
        deadline = request.options.deadline_seconds or self.config.restart_deadline
        started = time.monotonic()
        try:
            if not rollback:
                install(self.layout, request.release, request.source, require_sha256=self.config.require_sha256,
                        limits=self.limits)
            if request.options.restart in ("phased", "hot"):
                mode = self._restart_puma(request, deadline, attempt, recovering)
            else:
                mode = request.options.restart
                self._restart_process(request, deadline, attempt)
            if self.config.health_url:
                self._update(note=f"waiting for the app to answer {self.config.health_url}")
                health.wait_until_healthy(self.config.health_url, started + deadline)
            removed = prune(self.layout, self.config.keep_releases)
            if removed:
                logger.info("pruned releases %s", ", ".join(removed))
            self._update(state=DONE, finished_at=time.time())
            logger.info("release %s served by every worker (%s restart)", request.release, mode)
        except (ReleaseError, puma.PumaError, OSError, ValueError) as err:
            logger.warning("release %s failed: %s", request.release, err)
            self._fail(str(err), attempt, deadline)
        except Exception as err:  # never leave the state machine stuck in a running state
            logger.exception("release %s failed unexpectedly", request.release)
            self._fail(f"internal error: {err}", attempt, deadline)
        finally:
            journal.remove(self.layout.root)

    def _restart_puma(self, request: ReleaseRequest, deadline: float, attempt: Attempt,
                      recovering: int | None) -> str:
        """Switch `current` and restart Puma onto it; the restart mode used.

        After a failure during which Puma died (its container killed, say), the kubelet starts a
        new Puma, which boots on whatever `current` is then. When the controller then asks for the
        release that `current` was put back to, that Puma may not be up yet: it is waited for
        (PUMA_RETURN_SECONDS), not reported missing, and when it started after `current` was put
        back, it already serves the release and nothing is signalled.
        """
        view = self._locate(recovering is not None)
        if recovering is not None and view.master.start_ticks > recovering:
            self._update(note=f"Puma (pid {view.master.pid}) started after release {request.release} was put back: "
                              "it serves it, nothing to restart")
            return request.options.restart
        mode = self._restart_mode(view, request)
        puma.check_can_signal(view.master.pid, "Puma")
        self._update(state=RESTARTING, restart=mode)
        attempt.view, attempt.mode = view, mode
        attempt.surge = request.options.surge and mode == "phased" and view.mode == "cluster"
        self._switch(request.release, attempt)
        self._restart(view, mode, deadline, attempt=attempt, release=request.release, surge=attempt.surge)
        return mode

    def _locate(self, wait: bool) -> puma.PumaView:
        """Puma's master; with `wait`, while its container is being restarted, wait for it."""
        until = time.monotonic() + (PUMA_RETURN_SECONDS if wait else 0)
        while True:
            try:
                return puma.locate(self.config.puma_pidfile)
            except puma.PumaError:
                if time.monotonic() >= until:
                    raise
            time.sleep(0.5)

    def _switch(self, release: str, attempt: Attempt) -> None:
        attempt.before = links(self.layout)
        switch(self.layout, release)

    def _fail(self, error: str, attempt: Attempt, deadline: float) -> None:
        """Undo what the attempt changed, then report the failure: nothing is left half-moved."""
        changes: dict[str, Any] = {}
        if attempt.before is not None:
            old = Path(attempt.before.current).name if attempt.before.current else "none"
            self._update(note=f"failed: {error}; restoring release {old}")
            try:
                restore(self.layout, attempt.before)
                changes["reverted"] = True
                self._restored_ticks = puma.boot_ticks_now()
            except OSError as err:
                logger.error("could not restore current and previous: %s", err)
                changes["reverted"] = False
                error += f"; current and previous could not be restored: {err}"
        if attempt.signalled:
            if changes.get("reverted"):
                changes["puma_restored"], outcome = self._bring_back(attempt, deadline)
            else:
                changes["puma_restored"], outcome = False, "not restarted back: the links could not be restored"
            error += f"; {outcome}"
        elif changes.get("reverted"):
            error += "; current and previous restored (nothing had been signalled)"
        self._update(state=FAILED, error=error, note=None, finished_at=time.time(), **changes)

    def _bring_back(self, attempt: Attempt, deadline: float) -> tuple[bool, str]:
        """Signal the process again, now that `current` is the old release, and wait for it."""
        view, mode = attempt.view, attempt.mode
        if view is None or mode not in puma.SIGNALS:
            return False, ("current and previous restored; the process was signalled on the new release and is "
                           "not restarted back by the agent: ask for the current release again to restart it")
        latest = puma.find_puma(puma.read_processes(), view.master.pid)
        if latest is None:
            return False, f"current and previous restored; Puma (pid {view.master.pid}) is gone"
        old = Path(attempt.before.current).name if attempt.before and attempt.before.current else None
        try:
            self._restart(latest, mode, deadline, expected=len(view.workers), release=old, surge=attempt.surge)
        except puma.PumaError as err:
            logger.error("could not bring Puma back to the old release: %s", err)
            return False, f"current and previous restored, but Puma could not be brought back: {err}"
        logger.info("Puma is back on the old release (%s restart)", mode)
        return True, f"current and previous restored, and Puma restarted on the old release ({mode} restart)"

    def _restart_process(self, request: ReleaseRequest, deadline: float, attempt: Attempt) -> None:
        """drain or signal:<NAME>: the process is found, and can be signalled, before `current`
        moves, or nothing moves."""
        target = worker.Target(request.options.process, self.config.process_pidfile)
        process = worker.locate(target, puma.read_processes)
        puma.check_can_signal(process.pid, worker.describe(target))
        self._update(state=RESTARTING, restart=request.options.restart)
        self._switch(request.release, attempt)

        def progress(text: str) -> None:
            attempt.signalled = True  # every step is reported after a signal was sent
            with self._lock:
                self._status = replace(self._status, note=text, steps=(*self._status.steps, text))

        self._count_signal(request.release)
        if request.options.restart == "drain":
            worker.drain(target, request.options.quiet_signal, request.options.drain_seconds, deadline, progress)
        else:
            worker.send_signal(target, request.options.restart.split(":", 1)[1], progress)

    def _restart_mode(self, view: puma.PumaView, request: ReleaseRequest) -> str:
        if request.options.restart != "phased":
            return request.options.restart
        reason = None
        if view.mode == "single":
            reason = "Puma runs in single mode (workers 0)"
        else:
            try:
                if puma.preload_in_config(self.config.puma_config.read_text()):
                    reason = f"preload_app! is on in {self.config.puma_config}"
            except OSError:
                pass
        if reason is None:
            return "phased"
        if not request.options.allow_hot:
            raise puma.PumaError(f"a phased restart is impossible: {reason}; Puma would silently do a full "
                                 "restart. Fix the config, or allow a hot restart")
        self._update(note=f"hot restart instead of phased: {reason}")
        return "hot"

    def _restart(self, view: puma.PumaView, mode: str, deadline_seconds: float, expected: int | None = None,
                 attempt: Attempt | None = None, release: str | None = None, surge: bool = False) -> None:
        """Signal, then watch until every worker slot runs a process started after the signal.

        `expected` is the number of workers when all are up (a stalled restart shows fewer).
        Fails at the deadline, or as soon as `boot_failures` of the new workers have exited
        before the restart was done (`release`, the one restarted onto, names it).

        With `surge` (phased only), TTIN follows USR1 at once: Puma spawns one worker more, on
        the new code (the master has already moved to the new directory), and stops an old
        worker only once every worker is booted, so the pod never serves on fewer workers than
        it has. Done is then `expected + 1` new workers; TTOU then gives the extra one back.
        TTIN before USR1 would boot the extra worker on the old code, to be replaced as well.
        """
        expected = len(view.workers) if expected is None else expected
        started = time.monotonic()
        self._signal_and_watch(view, mode, deadline_seconds, expected, attempt, release, surge)
        if surge:
            self._end_surge(view, expected, started + deadline_seconds)

    def _signal_and_watch(self, view: puma.PumaView, mode: str, deadline_seconds: float, expected: int,
                          attempt: Attempt | None, release: str | None, surge: bool) -> None:
        stats_before = self._stats()
        ticks = puma.boot_ticks_now()
        self._send(view, mode, attempt, release, surge, journal.Restart(
            release or "", mode, view.master.pid, view.master.start_ticks, ticks, expected, surge,
            time.time() + deadline_seconds))
        watched = expected + 1 if surge else expected
        # Taken after the signal: a worker Puma forks before it handles the signal (on a revert,
        # one more of the crash loop being left) is then not taken for one of this restart's.
        watch = puma.BootWatch(puma.boot_ticks_now())
        started = time.monotonic()
        deadline = started + deadline_seconds
        latest: puma.PumaView | None = view
        stats: puma.Stats | None = None
        steady: tuple[frozenset[int], float] = (frozenset(), started)  # the worker pids, and since when
        try:
            while time.monotonic() < deadline:
                time.sleep(0.2)
                latest = puma.find_puma(puma.read_processes(), view.master.pid)
                if latest is None:
                    raise puma.PumaError(f"Puma (pid {view.master.pid}) exited during the {mode} restart")
                stats = self._stats()
                pids = frozenset(w.pid for w in latest.workers)
                if pids != steady[0]:
                    steady = (pids, time.monotonic())
                done = self._restart_done(latest, mode, watched, ticks, before=stats_before, now=stats,
                                          started=started, steady_since=steady[1])
                failures = watch.observe(latest, done)
                self._update(puma={"workersReplaced": sum(w.start_ticks >= ticks for w in latest.workers),
                                   "workersExpected": watched, "bootFailures": failures, "surge": surge})
                if done:
                    return
                if 0 < self.config.boot_failures <= failures:
                    raise puma.CannotBoot(puma.cannot_boot_message(release, failures, mode,
                                                                   puma.boot_error_tail(view)))
            raise _restart_timeout(view, mode, deadline_seconds, watched, ticks, latest, stats)
        except puma.PumaError:
            if surge:  # give the extra worker back whatever happened; the failure is what is reported
                with contextlib.suppress(puma.PumaError):
                    puma.signal_master(view, puma.SURGE_DOWN)
            raise

    def _send(self, view: puma.PumaView, mode: str, attempt: Attempt | None, release: str | None, surge: bool,
              record: journal.Restart) -> None:
        """The restart's signal (and TTIN for a surge), counted; a forward restart is journaled
        just after, so that a restarted agent finishes it (journal.py)."""
        puma.send(view, mode)
        self._count_signal(release)
        if attempt is not None:
            attempt.signalled = True
        if surge:
            puma.signal_master(view, puma.SURGE_UP)
        if attempt is not None and release is not None:
            journal.write(self.layout.root, record)

    def _end_surge(self, view: puma.PumaView, expected: int, deadline: float) -> None:
        """TTOU, then wait until Puma is back to `expected` booted workers (it culls the youngest)."""
        puma.signal_master(view, puma.SURGE_DOWN)
        until = max(deadline, time.monotonic() + 5)
        while time.monotonic() < until:
            if puma.shrunk(puma.find_puma(puma.read_processes(), view.master.pid), self._stats(), expected):
                return
            time.sleep(0.2)
        raise puma.PumaError(f"the surge worker did not stop: Puma still runs more than {expected} workers")

    def _restart_done(self, latest: puma.PumaView, mode: str, expected: int, ticks: int, *,
                      before: puma.Stats | None, now: puma.Stats | None, started: float, steady_since: float) -> bool:
        """One look during `_restart`: is it done? Kept apart so the watch loop stays readable.

        `before` and `now` are Puma's stats at the signal and at this look; `started` is when the
        watch began, `steady_since` since when the worker pids have not changed.
        """
        if now is not None and before is not None and mode == "phased":
            return now.phased_restart_done(before.phase) and now.workers == expected
        if expected == 0:
            # Single mode has no workers to count: the re-exec'd master has its title back.
            return time.monotonic() - started > 1 and puma.MASTER_TITLE.match(latest.master.title) is not None
        if self.config.puma_control_url:
            return now is not None and puma.workers_up(latest, ticks, expected, now)
        return puma.workers_up(latest, ticks, expected, None) and time.monotonic() - steady_since >= STEADY_SECONDS

    def _stats(self) -> puma.Stats | None:
        if not self.config.puma_control_url:
            return None
        try:
            return puma.fetch_stats(self.config.puma_control_url, self.config.puma_control_token)
        except (OSError, ValueError):
            return None
