DROP FUNCTION purge_jobs(timestamptz, text[], integer, integer);
DROP INDEX jobs_finished;
DROP FUNCTION mark_jobs_dispatched(text[], integer);
