DROP FUNCTION purge_jobs(timestamptz, text[], integer, integer);
DROP INDEX jobs_finished;

-- 0003's versions: only processing stages are leased; the sweeper ignores leases.
CREATE OR REPLACE FUNCTION take_dispatch_lease(p_job_id text, p_stage integer, p_holder text, p_lease interval)
RETURNS boolean
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    UPDATE job_stages s
       SET dispatch_holder = p_holder, dispatch_lease_until = now() + p_lease
     WHERE s.job_id = p_job_id AND s.stage = p_stage AND s.status = 'processing'
       AND (s.dispatch_holder IS NULL OR s.dispatch_holder = p_holder
            OR s.dispatch_lease_until < now());
    RETURN FOUND;
END $$;

CREATE OR REPLACE FUNCTION sweep_unsent_jobs(p_grace interval, p_limit integer)
RETURNS TABLE (job_id text, stage integer)
LANGUAGE sql SET search_path FROM CURRENT AS $$
    WITH due AS (
        SELECT j.job_id FROM jobs j
         WHERE j.dispatched_at IS NULL AND j.status IN ('queued', 'processing')
           AND j.updated_at < now() - p_grace
         ORDER BY j.updated_at
         LIMIT p_limit
           FOR NO KEY UPDATE SKIP LOCKED
    ), taken AS (
        UPDATE jobs j SET updated_at = now()
          FROM due WHERE j.job_id = due.job_id
        RETURNING j.job_id, j.stage
    ), logged AS (
        INSERT INTO job_events (job_id, stage, kind, actor, reason)
        SELECT c.job_id, c.stage, 'repair', 'janitor', 'stage message never sent: the sweeper sends it'
          FROM taken c
    )
    SELECT * FROM taken;
$$;
