"""The agent's pure parts: /proc and /stats parsing, Puma detection, request and checksum parsing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from customer_friendly.agent.puma import (
    BootWatch,
    Process,
    PumaView,
    Stats,
    cannot_boot_message,
    find_puma,
    parse_cmdline,
    parse_stat,
    preload_in_config,
    restarted_since,
    stat_state,
    summarize_log,
    workers_up,
)
from customer_friendly.contract.artifact import ArtifactError, artifact_url, parse_checksum

DATA = json.loads((Path(__file__).resolve().parents[1] / "fixtures" / "proc_table.json").read_text())
TABLE = [Process(p["pid"], p["ppid"], p["start"], p["title"]) for p in DATA["processes"]]


@pytest.mark.parametrize("case", DATA["stat_lines"], ids=lambda c: c["line"][:20])
def test_stat_lines_give_parent_and_start_time_even_with_odd_command_names(case: dict) -> None:
    assert parse_stat(case["line"]) == (case["ppid"], case["start"])


@pytest.mark.parametrize(("line", "state"), [
    (DATA["stat_lines"][1]["line"], "S"),
    ("4300 (puma: cluster worker 1: 4242 [app) Z) Z 4242 4242 4242 0 -1 4194368 9 0 0 0 1 0 0 0 20 0 8 0 99001", "Z"),
])
def test_the_state_of_a_process_tells_a_zombie_even_with_odd_command_names(line: str, state: str) -> None:
    assert stat_state(line) == state


def test_cmdline_nul_separators_become_spaces() -> None:
    assert parse_cmdline(b"puma 5.6.5 (tcp://0.0.0.0:3000) [app]\0\0") == "puma 5.6.5 (tcp://0.0.0.0:3000) [app]"


def test_the_master_is_found_by_its_title_with_its_own_workers_in_index_order() -> None:
    view = find_puma(TABLE)
    assert view is not None and view.master.pid == 4242 and view.mode == "cluster"
    assert [w.pid for w in view.workers] == [4300, 4301]


def test_a_pidfile_pid_wins_over_the_title_scan() -> None:
    found = find_puma(TABLE, master_pid=4400)
    assert found is not None and found.master.pid == 4400
    assert find_puma(TABLE, master_pid=31337) is None


def test_no_master_means_none() -> None:
    assert find_puma([p for p in TABLE if p.pid != 4242]) is None


def test_a_master_without_workers_is_single_mode() -> None:
    single = find_puma([p for p in TABLE if p.ppid != 4242])
    assert single is not None and single.mode == "single"


@pytest.mark.parametrize(("signal_ticks", "expected", "done"), [
    (1300, 2, True), (1450, 2, False), (1300, 3, False), (1300, 0, False),
])
def test_a_restart_is_done_when_every_worker_slot_is_newer_than_the_signal(
        signal_ticks: int, expected: int, done: bool) -> None:
    assert restarted_since(find_puma(TABLE), signal_ticks, expected) is done


@pytest.mark.parametrize(("stats", "up"), [
    (None, True),
    (Stats(phase=0, workers=2, booted_workers=2, old_workers=0), True),
    # A hot restart onto code that cannot boot: every worker is new, none has booted.
    (Stats(phase=0, workers=2, booted_workers=0, old_workers=0), False),
    (Stats(phase=0, workers=1, booted_workers=1, old_workers=0), False),
])
def test_workers_are_up_when_all_are_new_and_the_control_app_says_they_booted(stats: Stats | None, up: bool) -> None:
    assert workers_up(find_puma(TABLE), 1300, 2, stats) is up
    assert workers_up(find_puma(TABLE), 1450, 2, stats) is False


MASTER = Process(7000, 1, 100, "puma 5.6.5 (tcp://0.0.0.0:3000) [app]")
SIGNAL = 1000
"""The restart's signal, in clock ticks since boot: workers started before it are old."""


def worker(pid: int, start: int, index: int = 0, parent: int = MASTER.pid) -> Process:
    return Process(pid, parent, start, f"puma: cluster worker {index}: {MASTER.pid} [app]")


OLD_0, OLD_1 = worker(7001, 200, 0), worker(7002, 210, 1)

# Each step: the workers in one view of the process table, and whether the restart is done in it.
BOOT_CASES = {
    "a phased restart replaces the old workers one at a time: they leave on purpose": (
        [([OLD_0, OLD_1], False), ([OLD_1], False), ([worker(7010, 1100), OLD_1], False),
         ([worker(7010, 1100)], False), ([worker(7010, 1100), worker(7011, 1300, 1)], True)], 0, ()),
    "a phased restart onto a release that cannot boot: one slot crash-loops, the old worker stays": (
        [([OLD_0, OLD_1], False), ([OLD_1], False), ([worker(7010, 1100), OLD_1], False),
         ([OLD_1], False), ([worker(7012, 1600), OLD_1], False), ([worker(7014, 2100), OLD_1], False),
         ([worker(7016, 2600), OLD_1], False)], 3, (7010, 7012, 7014)),
    "a crash loop faster than the views: each new worker seen once, replaced by the next": (
        [([OLD_1], False), ([worker(7010, 1001), OLD_1], False), ([worker(7020, 1021), OLD_1], False),
         ([worker(7030, 1041), OLD_1], False), ([OLD_1], False)], 3, (7010, 7020, 7030)),
    "a hot restart: the re-exec'd master (same pid) has all new workers, the old ones are gone": (
        [([OLD_0, OLD_1], False), ([], False), ([worker(7020, 1400)], False),
         ([worker(7020, 1400), worker(7021, 1405, 1)], True)], 0, ()),
    "a hot restart onto a release that cannot boot: every slot crash-loops": (
        [([], False), ([worker(7020, 1400), worker(7021, 1405, 1)], False),
         ([worker(7022, 1900), worker(7023, 1905, 1)], False), ([], False)], 4, (7020, 7021, 7022, 7023)),
    "a new worker that exits after the restart is done does not count": (
        [([worker(7010, 1100), OLD_1], False), ([worker(7010, 1100), worker(7011, 1300, 1)], True),
         ([worker(7011, 1300, 1)], False), ([worker(7012, 1900), worker(7011, 1300, 1)], False)], 0, ()),
    "an exit in the very view that finds the restart done still counts": (
        [([worker(7010, 1100), worker(7011, 1300, 1)], False),
         ([worker(7012, 1400), worker(7011, 1300, 1)], True)], 1, (7010,)),
    "a worker started in the signal's own tick is new; a child of another process is no worker": (
        [([worker(7010, SIGNAL), worker(7040, 1100, parent=4242)], False), ([], False)], 1, (7010,)),
}


@pytest.mark.parametrize(("steps", "failures", "exited"), BOOT_CASES.values(), ids=BOOT_CASES.keys())
def test_a_restarts_failed_boots_are_its_new_workers_that_exit_before_it_is_done(
        steps: list[tuple[list[Process], bool]], failures: int, exited: tuple[int, ...]) -> None:
    watch = BootWatch(SIGNAL)
    counts = [watch.observe(find_puma([MASTER, *workers], MASTER.pid), done) for workers, done in steps]
    assert counts[-1] == watch.failures == failures and watch.exited == exited
    assert counts == sorted(counts)  # level-based: a count never goes back


def test_a_view_without_the_master_tells_nothing_about_the_workers() -> None:
    watch = BootWatch(SIGNAL)
    watch.observe(PumaView(MASTER, (worker(7010, 1100),)))
    assert watch.observe(None) == 0 and watch.alive == {7010}
    assert watch.observe(PumaView(MASTER, ())) == 1


@pytest.mark.parametrize(("release", "mode", "tail", "message"), [
    ("v3", "phased", None,
     "release v3 cannot boot: 3 new workers exited during the phased restart; the old workers keep serving"),
    ("v3", "hot", "! Unable to start worker | Early termination of worker",
     "release v3 cannot boot: 3 new workers exited during the hot restart; no worker serves until Puma is "
     "restarted on a release that boots; Puma said: ! Unable to start worker | Early termination of worker"),
    (None, "phased", None,
     "the release cannot boot: 3 new workers exited during the phased restart; the old workers keep serving"),
])
def test_a_release_that_cannot_boot_is_said_in_one_line(release: str | None, mode: str, tail: str | None,
                                                          message: str) -> None:
    assert cannot_boot_message(release, 3, mode, tail) == message


@pytest.mark.parametrize(("config", "preload"), [
    ("workers 2\npreload_app!\n", True),
    ("workers 2\n  preload_app! true\n", True),
    ("workers 2\npreload_app! false\n", False),
    ("workers 2\n# preload_app!\n", False),
    ("workers 2\n", False),
    ("preload_app!(false)", False),
])
def test_preload_is_read_from_the_puma_config(config: str, preload: bool) -> None:
    assert preload_in_config(config) is preload


def test_stats_tell_a_finished_phased_restart() -> None:
    done = Stats.parse(DATA["stats_cluster"])
    assert done == Stats(phase=1, workers=2, booted_workers=2, old_workers=0)
    assert done.phased_restart_done(phase_before=0)
    assert not done.phased_restart_done(phase_before=1)


def test_stats_mid_restart_are_not_done() -> None:
    mid_restart = Stats.parse(DATA["stats_mid_restart"])
    assert mid_restart is not None and not mid_restart.phased_restart_done(phase_before=0)


def test_single_mode_stats_have_no_workers() -> None:
    assert Stats.parse(DATA["stats_single"]) is None


@pytest.mark.parametrize(("text", "digest"), [
    ("a" * 64, "a" * 64),
    ("A" * 64 + "  v2.tar.gz\n", "a" * 64),
])
def test_sha256_files_in_sha256sum_format(text: str, digest: str) -> None:
    assert parse_checksum(text) == digest


@pytest.mark.parametrize("text", ["", "abc", "z" * 64, "v2.tar.gz " + "a" * 64])
def test_malformed_sha256_files_are_refused(text: str) -> None:
    with pytest.raises(ArtifactError):
        parse_checksum(text)


def test_the_source_template_gets_the_release() -> None:
    assert artifact_url("s3://b/web/{release}.tar.gz", "v2") == "s3://b/web/v2.tar.gz"
    with pytest.raises(ArtifactError):
        artifact_url("s3://b/web/{release}.tar.gz", "../v2")


def test_a_crash_looping_workers_output_is_summarized_to_its_distinct_last_lines() -> None:
    log = "\n".join(f"[{pid}] ! Unable to start worker\n[{pid}] config.ru:1:in `block in <main>'\n"
                    f"[{pid}] Early termination of worker" for pid in (11, 12, 13))
    assert summarize_log("[1] Puma starting\n" + log, lines=3) == (
        "! Unable to start worker | config.ru:1:in `block in <main>' | Early termination of worker")


def pid_of(process: Process | None) -> int | None:
    return process.pid if process else None


def test_a_worker_is_found_by_pidfile_then_pattern_then_as_the_puma_master(tmp_path) -> None:
    from customer_friendly.agent.worker import Target, find

    table = [*TABLE, Process(5000, 1, 900, "worker-app v1"), Process(5001, 1, 950, "worker-app v1")]
    assert pid_of(find(Target("^worker-app"), table, own_pid=1)) == 5000  # the oldest match
    assert pid_of(find(Target("^worker-app"), table, own_pid=5000)) == 5001  # never the agent itself
    assert pid_of(find(Target(), table, own_pid=1)) == 4242
    assert find(Target("^sidekiq"), table, own_pid=1) is None
    pidfile = tmp_path / "worker.pid"
    pidfile.write_text("5001\n")
    assert pid_of(find(Target("^nothing", pidfile), table, own_pid=1)) == 5001
    pidfile.write_text("not a pid")
    assert find(Target(None, pidfile), table, own_pid=1) is None


@pytest.mark.parametrize(("title", "busy"), [
    ("sidekiq 7.2.4 shop [3 of 10 busy]", 3), ("sidekiq 7.2.4 shop [0 of 10 busy] stopping", 0),
    ("worker-app v1 [1 of 1 busy]", 1), ("cronenberg", None),
])
def test_a_sidekiq_style_title_tells_the_jobs_in_hand(title: str, busy: int | None) -> None:
    from customer_friendly.agent.worker import busy_jobs

    assert busy_jobs(title) == busy
