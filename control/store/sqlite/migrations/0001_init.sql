-- Jobs, their attempts, and the worker registry. Times are Unix
-- microseconds (UTC). The CHECK constraints repeat the state machine that
-- the store's transitions follow.

CREATE TABLE jobs (
	id                TEXT    NOT NULL PRIMARY KEY,
	state             TEXT    NOT NULL CHECK (state IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
	priority          INTEGER NOT NULL,
	worker_type       TEXT    NOT NULL CHECK (worker_type IN ('', 'main', 'transient')),
	idempotency_key   TEXT    NOT NULL DEFAULT '',
	avatar_key        TEXT    NOT NULL,
	audio_key         TEXT    NOT NULL,
	avatar_id         TEXT    NOT NULL DEFAULT '',
	params            BLOB    NOT NULL,
	trace_context     TEXT    NOT NULL DEFAULT '',
	attempt           INTEGER NOT NULL DEFAULT 0 CHECK (attempt >= 0),
	token             TEXT    NOT NULL DEFAULT '',
	worker_id         TEXT    NOT NULL DEFAULT '',
	lease_expires_at  INTEGER,
	progress          TEXT,
	progress_at       INTEGER,
	interruptions     INTEGER NOT NULL DEFAULT 0 CHECK (interruptions >= 0),
	failures          INTEGER NOT NULL DEFAULT 0 CHECK (failures >= 0),
	max_interruptions INTEGER NOT NULL CHECK (max_interruptions >= 1),
	max_failures      INTEGER NOT NULL CHECK (max_failures >= 1),
	run_after         INTEGER NOT NULL,
	error             TEXT    NOT NULL DEFAULT '',
	output_key        TEXT    NOT NULL DEFAULT '',
	created_at        INTEGER NOT NULL,
	updated_at        INTEGER NOT NULL,
	finished_at       INTEGER,
	CONSTRAINT jobs_running_has_lease CHECK ((state = 'running') = (token <> '' AND lease_expires_at IS NOT NULL)),
	CONSTRAINT jobs_final_has_finished_at CHECK ((state IN ('succeeded', 'failed', 'cancelled')) = (finished_at IS NOT NULL)),
	CONSTRAINT jobs_output_iff_succeeded CHECK ((state = 'succeeded') = (output_key <> '')),
	CONSTRAINT jobs_attempted CHECK (state IN ('queued', 'cancelled') OR attempt >= 1)
) STRICT;

-- The claim: queued jobs by priority, then age.
CREATE INDEX jobs_claim ON jobs (priority DESC, created_at, id) WHERE state = 'queued';
-- The claim's preference for avatars the worker caches, within a priority.
CREATE INDEX jobs_claim_avatar ON jobs (avatar_id, priority, created_at, id) WHERE state = 'queued';
-- The sweeper: running jobs by lease.
CREATE INDEX jobs_lease ON jobs (lease_expires_at) WHERE state = 'running';
-- A worker's attempts (claims interrupt what the worker still holds).
CREATE INDEX jobs_worker ON jobs (worker_id, state);
-- JobList's order. (No index leads with state alone: SQLite, without
-- statistics, would prefer it to jobs_claim and sort the whole queue.)
CREATE INDEX jobs_created ON jobs (created_at, id);
CREATE UNIQUE INDEX jobs_idempotency_key ON jobs (idempotency_key) WHERE idempotency_key <> '';

CREATE TABLE attempts (
	job_id     TEXT    NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
	number     INTEGER NOT NULL CHECK (number >= 1),
	worker_id  TEXT    NOT NULL,
	token      TEXT    NOT NULL,
	outcome    TEXT    NOT NULL CHECK (outcome IN ('running', 'succeeded', 'failed', 'interrupted', 'released', 'cancelled')),
	error      TEXT    NOT NULL DEFAULT '',
	output_key TEXT    NOT NULL DEFAULT '',
	started_at INTEGER NOT NULL,
	ended_at   INTEGER,
	PRIMARY KEY (job_id, number),
	CONSTRAINT attempts_ended CHECK ((outcome = 'running') = (ended_at IS NULL))
) STRICT;

CREATE INDEX attempts_outcome ON attempts (outcome);

CREATE TABLE workers (
	id              TEXT    NOT NULL PRIMARY KEY,
	worker_type     TEXT    NOT NULL CHECK (worker_type IN ('', 'main', 'transient')),
	provider        TEXT    NOT NULL DEFAULT '',
	gpu_class       TEXT    NOT NULL DEFAULT '',
	status          TEXT    NOT NULL CHECK (status IN ('idle', 'busy', 'draining', 'offline')),
	version         TEXT    NOT NULL DEFAULT '',
	first_seen      INTEGER NOT NULL,
	last_seen       INTEGER NOT NULL,
	job_id          TEXT    NOT NULL DEFAULT '',
	attempt         INTEGER NOT NULL DEFAULT 0,
	drain_requested INTEGER NOT NULL DEFAULT 0 CHECK (drain_requested IN (0, 1)),
	cached_avatars  TEXT    NOT NULL DEFAULT '[]',
	self_check      TEXT,
	CONSTRAINT workers_job_attempt CHECK ((job_id = '') = (attempt = 0))
) STRICT;

CREATE INDEX workers_status ON workers (status, last_seen);
