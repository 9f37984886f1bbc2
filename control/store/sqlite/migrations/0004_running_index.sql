-- jobs_running served the sweeper and a claim's check of what a worker
-- holds, but every fenced update of an attempt (heartbeat, progress,
-- complete, fail, release) says "id = ? AND state = 'running'" too, and a
-- planner whose statistics say that few jobs run (taken before the
-- workers started) chose it over the primary key and read every running
-- job to find one. Its predicate now also asks for a worker, which only
-- the queries written for it say, so the fenced updates find their job
-- by its id.
DROP INDEX jobs_running;
CREATE INDEX jobs_running ON jobs (worker_id) WHERE state = 'running' AND worker_id <> '';
