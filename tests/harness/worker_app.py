"""A real Ruby worker, in the manner of Sidekiq, and a supervisor standing in for the kubelet.

The worker takes jobs from a queue directory (claiming each by an atomic rename), works on
one at a time, stops taking new ones on TSTP, and on TERM finishes the job in hand and exits.
The supervisor restarts it whenever it exits (restartPolicy Always), from `current`, so it
comes back on whatever release `current` points at.
"""

from __future__ import annotations

import io
import subprocess
import tarfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

WORKER = r'''$stdout.sync = true
VERSION = "{release}"
queue, done = ARGV
quiet = false
stopping = false
Signal.trap("TSTP") {{ quiet = true }}
Signal.trap("TERM") {{ stopping = true }}
Signal.trap("HUP") {{ File.write(File.join(done, "hup-#{{Process.pid}}"), VERSION) }}
def title(busy) = $0 = "worker-app #{{VERSION}} [#{{busy}} of 1 busy]" # as Sidekiq shows its load
title(0)
until stopping
  job = quiet ? nil : Dir.glob(File.join(queue, "*.job")).sort.first
  if job.nil?
    sleep 0.05
    next
  end
  title(1)
  claimed = "#{{job}}.#{{Process.pid}}"
  begin
    File.rename(job, claimed)
  rescue SystemCallError
    next
  end
  sleep 0.2 # the work
  File.write(File.join(done, File.basename(job, ".job") + ".done"), "#{{VERSION}} #{{Process.pid}}\n")
  File.delete(claimed)
  title(0)
end
'''


def worker_archive(release: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        data = WORKER.format(release=release).encode()
        info = tarfile.TarInfo("worker.rb")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@dataclass
class Supervisor:
    """Runs `ruby <code>/current/worker.rb queue done`, and starts it again whenever it exits."""

    code: Path
    queue: Path
    done: Path
    log: Path
    pids: list[int] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _proc: subprocess.Popen[bytes] | None = None
    _thread: threading.Thread | None = None

    def _run(self) -> None:
        with self.log.open("ab") as out:
            while not self._stop.is_set():
                self._proc = subprocess.Popen(["ruby", str(self.code / "current" / "worker.rb"), str(self.queue),
                                               str(self.done)], stdout=out, stderr=subprocess.STDOUT)
                self.pids.append(self._proc.pid)
                self._proc.wait()

    def start(self) -> Supervisor:
        self.queue.mkdir(parents=True, exist_ok=True)
        self.done.mkdir(parents=True, exist_ok=True)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._proc and self._proc.poll() is None:
            self._proc.terminate()
            self._proc.wait(10)
        if self._thread:
            self._thread.join(10)
