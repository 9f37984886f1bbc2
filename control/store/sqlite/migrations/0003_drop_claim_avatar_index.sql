-- The claim looks for a job with a cached avatar among the top priority's
-- first claimable jobs, which it reads through jobs_claim; no query reads
-- jobs_claim_avatar any more, and every submitted job paid for an entry
-- in it.
DROP INDEX jobs_claim_avatar;
