-- Speed and retention (issue 9): the next stage entered by the process that ended the last
-- one, under the stage's dispatch lease; the purge of finished jobs past their retention,
-- in bounded batches. (Batched stage-1 sends mark their jobs with 0003's
-- mark_job_dispatched.)

-- A pending stage can be leased too: the process entering it holds the lease from the
-- advance until the stage's tasks are sent and the job's outbox marker is set.
CREATE OR REPLACE FUNCTION take_dispatch_lease(p_job_id text, p_stage integer, p_holder text, p_lease interval)
RETURNS boolean
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    UPDATE job_stages s
       SET dispatch_holder = p_holder, dispatch_lease_until = now() + p_lease
     WHERE s.job_id = p_job_id AND s.stage = p_stage AND s.status IN ('pending', 'processing')
       AND (s.dispatch_holder IS NULL OR s.dispatch_holder = p_holder
            OR s.dispatch_lease_until < now());
    RETURN FOUND;
END $$;

-- A job whose current stage someone holds the lease of is being entered or dispatched:
-- its job message is not "never sent" until that lease expires.
CREATE OR REPLACE FUNCTION sweep_unsent_jobs(p_grace interval, p_limit integer)
RETURNS TABLE (job_id text, stage integer)
LANGUAGE sql SET search_path FROM CURRENT AS $$
    WITH due AS (
        SELECT j.job_id FROM jobs j
         WHERE j.dispatched_at IS NULL AND j.status IN ('queued', 'processing')
           AND j.updated_at < now() - p_grace
           AND NOT EXISTS (SELECT 1 FROM job_stages s
                            WHERE s.job_id = j.job_id AND s.stage = j.stage
                              AND s.dispatch_lease_until >= now())
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

-- Finished jobs in the order they finished: what retention reads.
CREATE INDEX jobs_finished ON jobs (finished_at, job_id) WHERE finished_at IS NOT NULL;

-- Delete finished jobs that finished before p_older_than (of the given statuses; all
-- finished statuses when NULL), with their stages, tasks and events: the oldest first,
-- at most p_max_jobs jobs and, past the first job, no more than p_max_tasks tasks.
-- Jobs another transaction holds are skipped. A re-run that outlives the job it re-ran
-- keeps running; only its rerun_of link is cleared.
CREATE FUNCTION purge_jobs(
    p_older_than timestamptz, p_statuses text[], p_max_jobs integer, p_max_tasks integer
) RETURNS TABLE (jobs integer, tasks bigint)
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
#variable_conflict use_column
DECLARE
    v_ids text[];
    v_tasks bigint;
BEGIN
    IF p_statuses IS NOT NULL AND NOT p_statuses <@
            ARRAY['completed', 'completed_with_errors', 'failed', 'cancelled'] THEN
        RAISE EXCEPTION 'purge_jobs: only finished statuses can be purged, got %', p_statuses
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_max_jobs < 1 OR p_max_tasks < 1 THEN
        RAISE EXCEPTION 'purge_jobs: batch limits must be positive (jobs %, tasks %)',
            p_max_jobs, p_max_tasks USING ERRCODE = 'invalid_parameter_value';
    END IF;
    WITH candidates AS (
        SELECT j.job_id, j.finished_at FROM jobs j
         WHERE j.finished_at IS NOT NULL AND j.finished_at < p_older_than
           AND j.status IN ('completed', 'completed_with_errors', 'failed', 'cancelled')
           AND (p_statuses IS NULL OR j.status = ANY (p_statuses))
         ORDER BY j.finished_at, j.job_id
         LIMIT p_max_jobs
           FOR UPDATE OF j SKIP LOCKED
    ), sized AS (
        SELECT c.job_id, n.tasks,
               sum(n.tasks) OVER (ORDER BY c.finished_at, c.job_id) - n.tasks AS before
          FROM candidates c
          CROSS JOIN LATERAL (SELECT coalesce(sum(s.task_count), 0) AS tasks
                                FROM job_stages s WHERE s.job_id = c.job_id) n
    )
    SELECT array_agg(job_id) INTO v_ids FROM sized
     WHERE before = 0 OR before + tasks <= p_max_tasks;
    IF v_ids IS NULL THEN
        RETURN QUERY SELECT 0, 0::bigint;
        RETURN;
    END IF;
    UPDATE jobs SET rerun_of = NULL WHERE rerun_of = ANY (v_ids) AND job_id <> ALL (v_ids);
    DELETE FROM tasks WHERE job_id = ANY (v_ids);
    GET DIAGNOSTICS v_tasks = ROW_COUNT;
    DELETE FROM jobs WHERE job_id = ANY (v_ids);  -- cascades to job_stages and job_events
    RETURN QUERY SELECT cardinality(v_ids), v_tasks;
END $$;
