DROP FUNCTION release_poison_replay(bigint, timestamptz);
DROP FUNCTION claim_poison_replay(bigint, boolean);
DROP FUNCTION record_poison(text, text, text, integer, text, text, text[]);
DROP FUNCTION record_repair(text, integer, text);
DROP FUNCTION reopen_lost_messages(interval, timestamptz, timestamptz, integer, integer);
DROP FUNCTION sweep_unsent_jobs(interval, integer);
DROP FUNCTION sweep_unsent_tasks(interval, integer, text, interval);
DROP FUNCTION release_dispatch_lease(text, integer, text);
DROP FUNCTION take_dispatch_lease(text, integer, text, interval);
DROP FUNCTION heartbeat_tasks(text[], text);
DROP FUNCTION mark_job_dispatched(text, integer);
DROP FUNCTION mark_tasks_dispatched(text[]);
DROP FUNCTION deferred_tasks(text[]);

-- 0001's claim and 0002's sweeper and reopen, as they were.
CREATE OR REPLACE FUNCTION claim_tasks(p_task_ids text[], p_worker text)
RETURNS SETOF tasks
LANGUAGE sql SET search_path FROM CURRENT AS $$
    WITH claimable AS (
        SELECT t.task_id FROM tasks t
         WHERE t.task_id = ANY (p_task_ids)
           AND t.status IN ('queued', 'retrying')
           AND t.attempt < t.max_attempts
           AND EXISTS (SELECT 1 FROM jobs j WHERE j.job_id = t.job_id AND j.status = 'processing')
         ORDER BY t.task_id
           FOR NO KEY UPDATE OF t
    )
    UPDATE tasks t
       SET status = 'processing', attempt = t.attempt + 1, claimed_by = p_worker,
           claimed_at = now(), heartbeat_at = now(), next_attempt_at = NULL, updated_at = now()
      FROM claimable c
     WHERE t.task_id = c.task_id AND t.status IN ('queued', 'retrying')
    RETURNING t.*;
$$;

CREATE FUNCTION claim_unsent_tasks(p_grace interval, p_limit integer)
RETURNS TABLE (task_id text, job_id text, stage integer, delay_s double precision)
LANGUAGE sql SET search_path FROM CURRENT AS $$
    WITH due AS (
        SELECT t.task_id FROM tasks t JOIN jobs j ON j.job_id = t.job_id
         WHERE t.dispatched_at IS NULL AND t.status IN ('queued', 'retrying')
           AND t.updated_at < now() - p_grace AND j.status = 'processing'
         ORDER BY t.updated_at
         LIMIT p_limit
           FOR NO KEY UPDATE OF t SKIP LOCKED
    ), claimed AS (
        UPDATE tasks t SET dispatched_at = now()
          FROM due WHERE t.task_id = due.task_id
        RETURNING t.task_id, t.job_id, t.stage,
                  greatest(0, extract(epoch FROM coalesce(t.next_attempt_at, now()) - now()))::float8
    ), logged AS (
        -- One repair event per stage and sweep, with how many of its tasks were unsent.
        INSERT INTO job_events (job_id, stage, kind, actor, reason, detail)
        SELECT c.job_id, c.stage, 'repair', 'janitor',
               'task message never sent: the sweeper sends it', jsonb_build_object('tasks', count(*))
          FROM claimed c GROUP BY c.job_id, c.stage
    )
    SELECT * FROM claimed;
$$;

CREATE FUNCTION claim_unsent_jobs(p_grace interval, p_limit integer)
RETURNS TABLE (job_id text, stage integer)
LANGUAGE sql SET search_path FROM CURRENT AS $$
    WITH due AS (
        SELECT j.job_id FROM jobs j
         WHERE j.dispatched_at IS NULL AND j.status IN ('queued', 'processing')
           AND j.updated_at < now() - p_grace
         ORDER BY j.updated_at
         LIMIT p_limit
           FOR NO KEY UPDATE SKIP LOCKED
    ), claimed AS (
        UPDATE jobs j SET dispatched_at = now()
          FROM due WHERE j.job_id = due.job_id
        RETURNING j.job_id, j.stage
    ), logged AS (
        INSERT INTO job_events (job_id, stage, kind, actor, reason)
        SELECT c.job_id, c.stage, 'repair', 'janitor', 'stage message never sent: the sweeper sends it'
          FROM claimed c
    )
    SELECT * FROM claimed;
$$;

CREATE FUNCTION reopen_idle_messages(p_idle interval)
RETURNS TABLE (tasks integer, jobs integer)
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    v_tasks integer;
    v_jobs integer;
BEGIN
    WITH idle AS (
        UPDATE tasks t SET dispatched_at = NULL, updated_at = now()
          FROM jobs j
         WHERE j.job_id = t.job_id AND j.status = 'processing'
           AND t.status IN ('queued', 'retrying') AND t.dispatched_at < now() - p_idle
           AND coalesce(t.next_attempt_at, t.dispatched_at) < now() - p_idle
        RETURNING t.job_id, t.stage, t.task_id
    ), logged AS (
        INSERT INTO job_events (job_id, stage, task_id, kind, actor, reason)
        SELECT i.job_id, i.stage, i.task_id, 'repair', 'janitor',
               'task message sent but never claimed: sending it again'
          FROM idle i
        RETURNING 1
    )
    SELECT count(*) INTO v_tasks FROM logged;
    WITH idle AS (
        UPDATE jobs j SET dispatched_at = NULL, updated_at = now()
          FROM job_stages s
         WHERE s.job_id = j.job_id AND s.stage = j.stage AND s.status = 'pending'
           AND j.status IN ('queued', 'processing') AND j.dispatched_at < now() - p_idle
        RETURNING j.job_id, j.stage
    ), logged AS (
        INSERT INTO job_events (job_id, stage, kind, actor, reason)
        SELECT i.job_id, i.stage, 'repair', 'janitor',
               'stage message sent but the stage never started: sending it again'
          FROM idle i
        RETURNING 1
    )
    SELECT count(*) INTO v_jobs FROM logged;
    RETURN QUERY SELECT v_tasks, v_jobs;
END $$;

ALTER TABLE job_stages DROP COLUMN dispatch_lease_until;
ALTER TABLE job_stages DROP COLUMN dispatch_holder;
