-- Lookups by task id that a long history cannot slow (issue 9). A table of mostly finished
-- tasks has statistics that say no task is queued, retrying or processing, so the planner
-- thinks the partial indexes on those statuses (tasks_dispatched_waiting, tasks_undispatched,
-- tasks_running_by_heartbeat, tasks_running_by_stage) are empty and scans one whole, testing
-- each entry against the ids, rather than look the ids up in tasks_pkey: a claim of 25 tasks
-- read every unclaimed task of the running stage (0.2 s with 10,000 of them). Here the
-- status tests of the statements that name their tasks by id are written as a CASE, from
-- which the planner cannot prove a partial index's predicate, so the ids are looked up by
-- key whatever the statistics say. Same rows, same locks, same order as 0001-0004.

CREATE OR REPLACE FUNCTION claim_tasks(p_task_ids text[], p_worker text)
RETURNS SETOF tasks
LANGUAGE sql SET search_path FROM CURRENT AS $$
    WITH claimable AS (
        SELECT t.task_id FROM tasks t
         WHERE t.task_id = ANY (p_task_ids)
           AND CASE WHEN t.status IN ('queued', 'retrying') THEN true END
           AND t.attempt < t.max_attempts
           AND (t.next_attempt_at IS NULL OR t.next_attempt_at <= now())
           AND EXISTS (SELECT 1 FROM jobs j WHERE j.job_id = t.job_id AND j.status = 'processing')
         ORDER BY t.task_id
           FOR NO KEY UPDATE OF t
    )
    UPDATE tasks t
       SET status = 'processing', attempt = t.attempt + 1, claimed_by = p_worker,
           claimed_at = now(), heartbeat_at = now(), next_attempt_at = NULL, updated_at = now()
      FROM claimable c
     WHERE t.task_id = c.task_id AND CASE WHEN t.status IN ('queued', 'retrying') THEN true END
    RETURNING t.*;
$$;

CREATE OR REPLACE FUNCTION deferred_tasks(p_task_ids text[])
RETURNS TABLE (task_id text, delay_s double precision)
LANGUAGE sql STABLE SET search_path FROM CURRENT AS $$
    SELECT t.task_id, extract(epoch FROM t.next_attempt_at - now())::float8
      FROM tasks t
     WHERE t.task_id = ANY (p_task_ids)
       AND CASE WHEN t.status IN ('queued', 'retrying') THEN true END
       AND t.next_attempt_at > now()
     ORDER BY t.task_id;
$$;

CREATE OR REPLACE FUNCTION mark_tasks_dispatched(p_task_ids text[])
RETURNS integer
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    v_count integer;
BEGIN
    UPDATE tasks t SET dispatched_at = now()
      FROM (SELECT u.task_id FROM tasks u
             WHERE u.task_id = ANY (p_task_ids)
               AND CASE WHEN u.dispatched_at IS NULL AND u.status IN ('queued', 'retrying')
                        THEN true END
             ORDER BY u.task_id FOR NO KEY UPDATE SKIP LOCKED) unsent
     WHERE t.task_id = unsent.task_id;
    GET DIAGNOSTICS v_count = ROW_COUNT;
    RETURN v_count;
END $$;

CREATE OR REPLACE FUNCTION heartbeat_tasks(p_task_ids text[], p_worker text)
RETURNS integer
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    v_count integer;
BEGIN
    UPDATE tasks t SET heartbeat_at = now()
      FROM (SELECT a.task_id FROM tasks a
             WHERE a.task_id = ANY (p_task_ids)
               AND CASE WHEN a.status = 'processing' THEN true END
               AND a.claimed_by = p_worker
             ORDER BY a.task_id FOR NO KEY UPDATE SKIP LOCKED) alive
     WHERE t.task_id = alive.task_id;
    GET DIAGNOSTICS v_count = ROW_COUNT;
    RETURN v_count;
END $$;

CREATE OR REPLACE FUNCTION retry_task(p_task_id text, p_attempt integer, p_error jsonb, p_delay interval)
RETURNS boolean
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
#variable_conflict use_column
DECLARE
    v_job text;
    v_stage integer;
BEGIN
    UPDATE tasks
       SET status = 'retrying', error = p_error, next_attempt_at = now() + p_delay,
           dispatched_at = NULL, heartbeat_at = NULL, updated_at = now()
     WHERE task_id = p_task_id AND CASE WHEN status = 'processing' THEN true END
       AND attempt = p_attempt AND attempt < max_attempts
    RETURNING job_id, stage INTO v_job, v_stage;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    INSERT INTO job_events (job_id, stage, task_id, kind, from_status, to_status, reason, detail)
    VALUES (v_job, v_stage, p_task_id, 'task_retry', 'processing', 'retrying',
            p_error ->> 'message', p_error || jsonb_build_object('delay_s', extract(epoch FROM p_delay)));
    RETURN true;
END $$;

CREATE OR REPLACE FUNCTION hold_tasks_if_paused(p_job_id text, p_task_ids text[])
RETURNS boolean
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    PERFORM 1 FROM job_type_pauses p JOIN jobs j ON j.job_type = p.job_type
      WHERE j.job_id = p_job_id FOR SHARE OF p;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    -- SKIP LOCKED: a locked task is being claimed by another delivery right now.
    UPDATE tasks t SET dispatched_at = pause_hold(), updated_at = now()
      FROM (SELECT u.task_id FROM tasks u
             WHERE u.task_id = ANY (p_task_ids) AND u.job_id = p_job_id
               AND CASE WHEN u.status IN ('queued', 'retrying') THEN true END
             ORDER BY u.task_id FOR NO KEY UPDATE SKIP LOCKED) held
     WHERE t.task_id = held.task_id;
    RETURN true;
END $$;

CREATE OR REPLACE FUNCTION report_task_progress(
    p_task_id text, p_attempt integer, p_fraction double precision, p_message text
) RETURNS boolean
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    IF p_fraction IS NULL OR p_fraction < 0 OR p_fraction > 1 THEN
        RAISE EXCEPTION 'report_task_progress: % is not a fraction within 0..1 (task %)',
            p_fraction, p_task_id USING ERRCODE = 'invalid_parameter_value';
    END IF;
    UPDATE tasks t
       SET progress = p_fraction, progress_message = p_message, progress_attempt = p_attempt,
           progress_at = now()
     WHERE t.task_id = p_task_id AND CASE WHEN t.status = 'processing' THEN true END
       AND t.attempt = p_attempt;
    RETURN FOUND;
END $$;

-- The janitor's reopen: its re-check of each lost task, joined by id, read every unclaimed
-- task of the running stages the same way.
CREATE OR REPLACE FUNCTION reopen_lost_messages(
    p_idle interval, p_tasks_sent_before timestamptz, p_jobs_sent_before timestamptz,
    p_limit integer, p_per_stage integer
) RETURNS TABLE (tasks integer, jobs integer)
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    v_tasks integer;
    v_jobs integer;
BEGIN
    WITH lost AS (
        SELECT r.task_id FROM (
            SELECT t.task_id, t.updated_at,
                   row_number() OVER (PARTITION BY t.job_id, t.stage ORDER BY t.dispatched_at) AS n
              FROM tasks t JOIN jobs j ON j.job_id = t.job_id
             WHERE j.status = 'processing' AND t.status IN ('queued', 'retrying')
               AND t.dispatched_at < p_tasks_sent_before
               AND greatest(t.dispatched_at, coalesce(t.next_attempt_at, t.dispatched_at))
                   < now() - p_idle) r
         WHERE r.n <= p_per_stage
         ORDER BY r.updated_at
         LIMIT p_limit
    ), idle AS (
        UPDATE tasks t SET dispatched_at = NULL, updated_at = now()
          FROM lost WHERE t.task_id = lost.task_id
           AND CASE WHEN t.status IN ('queued', 'retrying') THEN true END
        RETURNING t.job_id, t.stage, t.task_id
    ), logged AS (
        INSERT INTO job_events (job_id, stage, task_id, kind, actor, reason)
        SELECT i.job_id, i.stage, i.task_id, 'repair', 'janitor',
               'task message sent but never claimed: sending it again'
          FROM idle i
        RETURNING 1
    )
    SELECT count(*) INTO v_tasks FROM logged;
    WITH lost AS (
        SELECT j.job_id FROM jobs j JOIN job_stages s ON s.job_id = j.job_id AND s.stage = j.stage
         WHERE s.status = 'pending' AND j.status IN ('queued', 'processing')
           AND j.dispatched_at < p_jobs_sent_before AND j.dispatched_at < now() - p_idle
         ORDER BY j.dispatched_at
         LIMIT p_limit
    ), idle AS (
        UPDATE jobs j SET dispatched_at = NULL, updated_at = now()
          FROM lost WHERE j.job_id = lost.job_id
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
