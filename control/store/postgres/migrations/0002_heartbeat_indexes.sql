-- Every heartbeat changes its worker's last_seen and, while it holds an
-- attempt, its job's lease_expires_at. Indexes on those two columns made
-- each heartbeat rewrite index entries (and, in PostgreSQL, ruled out
-- HOT updates, so every index of the row got a new entry). Index columns
-- that heartbeats leave alone instead: the sweeper reads all running jobs
-- and all workers that are not offline either way, a few per worker.

DROP INDEX jobs_lease;
-- The sweeper's running jobs, and the claim's check for what a worker holds.
CREATE INDEX jobs_running ON jobs (worker_id) WHERE state = 'running';

DROP INDEX workers_status;
CREATE INDEX workers_status ON workers (status);
