-- Jobs, their attempts, and the worker registry, in the schema named by
-- the connection's search_path. Ids use the C collation so that every
-- database orders them byte-wise, as SQLite does. The CHECK constraints
-- repeat the state machine that the store's transitions follow.

CREATE TABLE jobs (
	id                text COLLATE "C" NOT NULL PRIMARY KEY,
	state             text        NOT NULL CHECK (state IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
	priority          integer     NOT NULL,
	worker_type       text        NOT NULL CHECK (worker_type IN ('', 'main', 'transient')),
	idempotency_key   text        NOT NULL DEFAULT '',
	avatar_key        text        NOT NULL,
	audio_key         text        NOT NULL,
	avatar_id         text        NOT NULL DEFAULT '',
	params            bytea       NOT NULL,
	trace_context     text        NOT NULL DEFAULT '',
	attempt           integer     NOT NULL DEFAULT 0 CHECK (attempt >= 0),
	token             text        NOT NULL DEFAULT '',
	worker_id         text COLLATE "C" NOT NULL DEFAULT '',
	lease_expires_at  timestamptz,
	progress          text,
	progress_at       timestamptz,
	interruptions     integer     NOT NULL DEFAULT 0 CHECK (interruptions >= 0),
	failures          integer     NOT NULL DEFAULT 0 CHECK (failures >= 0),
	max_interruptions integer     NOT NULL CHECK (max_interruptions >= 1),
	max_failures      integer     NOT NULL CHECK (max_failures >= 1),
	run_after         timestamptz NOT NULL,
	error             text        NOT NULL DEFAULT '',
	output_key        text        NOT NULL DEFAULT '',
	created_at        timestamptz NOT NULL,
	updated_at        timestamptz NOT NULL,
	finished_at       timestamptz,
	CONSTRAINT jobs_running_has_lease CHECK ((state = 'running') = (token <> '' AND lease_expires_at IS NOT NULL)),
	CONSTRAINT jobs_final_has_finished_at CHECK ((state IN ('succeeded', 'failed', 'cancelled')) = (finished_at IS NOT NULL)),
	CONSTRAINT jobs_output_iff_succeeded CHECK ((state = 'succeeded') = (output_key <> '')),
	CONSTRAINT jobs_attempted CHECK (state IN ('queued', 'cancelled') OR attempt >= 1)
);

-- The claim: queued jobs by priority, then age.
CREATE INDEX jobs_claim ON jobs (priority DESC, created_at, id) WHERE state = 'queued';
-- The claim's preference for avatars the worker caches, within a priority.
CREATE INDEX jobs_claim_avatar ON jobs (avatar_id, priority, created_at, id) WHERE state = 'queued';
-- The sweeper: running jobs by lease.
CREATE INDEX jobs_lease ON jobs (lease_expires_at) WHERE state = 'running';
-- A worker's attempts (claims interrupt what the worker still holds).
CREATE INDEX jobs_worker ON jobs (worker_id, state);
-- JobList's order, and its state filter.
CREATE INDEX jobs_created ON jobs (created_at, id);
CREATE INDEX jobs_state ON jobs (state, created_at, id);
CREATE UNIQUE INDEX jobs_idempotency_key ON jobs (idempotency_key) WHERE idempotency_key <> '';

CREATE TABLE attempts (
	job_id     text COLLATE "C" NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
	number     integer     NOT NULL CHECK (number >= 1),
	worker_id  text        NOT NULL,
	token      text        NOT NULL,
	outcome    text        NOT NULL CHECK (outcome IN ('running', 'succeeded', 'failed', 'interrupted', 'released', 'cancelled')),
	error      text        NOT NULL DEFAULT '',
	output_key text        NOT NULL DEFAULT '',
	started_at timestamptz NOT NULL,
	ended_at   timestamptz,
	PRIMARY KEY (job_id, number),
	CONSTRAINT attempts_ended CHECK ((outcome = 'running') = (ended_at IS NULL))
);

CREATE INDEX attempts_outcome ON attempts (outcome);

CREATE TABLE workers (
	id              text COLLATE "C" NOT NULL PRIMARY KEY,
	worker_type     text        NOT NULL CHECK (worker_type IN ('', 'main', 'transient')),
	provider        text        NOT NULL DEFAULT '',
	gpu_class       text        NOT NULL DEFAULT '',
	status          text        NOT NULL CHECK (status IN ('idle', 'busy', 'draining', 'offline')),
	version         text        NOT NULL DEFAULT '',
	first_seen      timestamptz NOT NULL,
	last_seen       timestamptz NOT NULL,
	job_id          text        NOT NULL DEFAULT '',
	attempt         integer     NOT NULL DEFAULT 0,
	drain_requested boolean     NOT NULL DEFAULT false,
	cached_avatars  text        NOT NULL DEFAULT '[]',
	self_check      text,
	CONSTRAINT workers_job_attempt CHECK ((job_id = '') = (attempt = 0))
);

CREATE INDEX workers_status ON workers (status, last_seen);
