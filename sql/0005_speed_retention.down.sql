DROP FUNCTION purge_jobs(timestamptz, text[], integer, integer);
DROP INDEX jobs_finished;
