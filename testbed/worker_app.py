"""A real Ruby worker, in the manner of Sidekiq, shipped as a release.

It runs as a container's main process (`ruby /app/current/worker.rb <queue> <done>`), takes
jobs from a queue directory (claiming each by an atomic rename, so several workers can share
one queue), works on one at a time, stops taking new ones on TSTP, and on TERM finishes the
job in hand and exits; the kubelet then starts the container again, from `current`, so it
comes back on whatever release `current` points at. Its process title shows its load as
Sidekiq's does (`worker-app v1 [1 of 1 busy]`), which is how the agent finds it and knows
when it is idle. Each job done appends one line `<release> <pid> <pod>` to `<done>/<job>.done`:
a job done twice has two lines. On HUP it writes `<done>/hup-<pod>-<pid>` (a reload signal).
"""

from __future__ import annotations

WORKER = r'''require "socket"
$stdout.sync = true
VERSION = "{release}"
NAME = ENV.fetch("WORKER_NAME", "worker-app")
HOST = Socket.gethostname
queue, done = ARGV
quiet = false
stopping = false
Signal.trap("TSTP") {{ quiet = true }}
Signal.trap("TERM") {{ stopping = true }}
Signal.trap("HUP") {{ File.write(File.join(done, "hup-#{{HOST}}-#{{Process.pid}}"), VERSION) }}
def title(busy) = $0 = "#{{NAME}} #{{VERSION}} [#{{busy}} of 1 busy]" # as Sidekiq shows its load
title(0)
puts "#{{NAME}} #{{VERSION}} started as pid #{{Process.pid}} on #{{HOST}}"
told = false
until stopping
  if quiet && !told
    puts "#{{NAME}} #{{VERSION}}: quiet, taking no new jobs"
    told = true
  end
  job = quiet ? nil : Dir.glob(File.join(queue, "*.job")).sort.first
  if job.nil?
    sleep 0.05
    next
  end
  claimed = "#{{job}}.#{{HOST}}.#{{Process.pid}}"
  begin
    File.rename(job, claimed)
  rescue SystemCallError
    next
  end
  title(1)
  sleep 0.2 # the work
  record = File.join(done, File.basename(job, ".job") + ".done")
  File.open(record, "a") {{ |f| f.puts "#{{VERSION}} #{{Process.pid}} #{{HOST}}" }}
  File.delete(claimed)
  title(0)
end
puts "#{{NAME}} #{{VERSION}}: TERM, exiting with nothing in hand"
'''


def worker_files(release: str) -> dict[str, str]:
    """The files of a worker release."""
    return {"worker.rb": WORKER.format(release=release)}
