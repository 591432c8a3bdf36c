-- Crash recovery: the janitor's guarded repairs, the outbox sweeper's claim, and the
-- operator's retry of a failed job. Every repair is a compare-and-set, so janitors on
-- several hosts at once repair each item once.

-- A running task whose heartbeat is older than p_lease lost its worker: it goes back to
-- retrying (re-sent after p_delay), or fails once its attempts are spent.
CREATE FUNCTION reap_task(p_task_id text, p_lease interval, p_delay interval)
RETURNS TABLE (action text, is_last_task boolean, attempt integer)
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
#variable_conflict use_column
DECLARE
    v_task tasks%ROWTYPE;
    v_error jsonb;
    v_last boolean;
BEGIN
    SELECT * INTO v_task FROM tasks t WHERE t.task_id = p_task_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'reap_task: task % does not exist', p_task_id USING ERRCODE = 'no_data_found';
    END IF;
    -- The same lock order as finish_task: the stage's advisory lock, then the task row.
    PERFORM pg_advisory_xact_lock(hashtext(v_task.job_id), v_task.stage);
    SELECT * INTO v_task FROM tasks t WHERE t.task_id = p_task_id FOR NO KEY UPDATE;
    IF v_task.status <> 'processing' OR v_task.heartbeat_at >= now() - p_lease THEN
        RETURN QUERY SELECT 'none'::text, false, v_task.attempt;
        RETURN;
    END IF;
    v_error := jsonb_build_object(
        'type', 'WorkerLost',
        'message', format('worker %s sent no heartbeat since %s', v_task.claimed_by, v_task.heartbeat_at),
        'attempt', v_task.attempt, 'permanent', false, 'traceback', NULL);
    IF v_task.attempt < v_task.max_attempts THEN
        UPDATE tasks t
           SET status = 'retrying', error = v_error, next_attempt_at = now() + p_delay,
               dispatched_at = NULL, heartbeat_at = NULL, updated_at = now()
         WHERE t.task_id = p_task_id;
        INSERT INTO job_events (job_id, stage, task_id, kind, from_status, to_status, actor, reason, detail)
        VALUES (v_task.job_id, v_task.stage, p_task_id, 'repair', 'processing', 'retrying', 'janitor',
                v_error ->> 'message', v_error);
        RETURN QUERY SELECT 'retried'::text, false, v_task.attempt;
        RETURN;
    END IF;
    SELECT f.is_last_task INTO v_last
      FROM finish_task(p_task_id, v_task.attempt, 'failed', NULL, v_error, ARRAY['processing'],
                       'janitor', v_error ->> 'message') f;
    RETURN QUERY SELECT 'failed'::text, v_last, v_task.attempt;
END $$;

-- The sweeper's claim on unsent messages: mark queued/retrying tasks that no message names
-- as dispatched and return them; only the caller that marked a task sends it.
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

-- The same for job messages: jobs whose current stage's message was never sent.
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

-- Messages that were sent but nothing came of them for p_idle (lost with a storage
-- account's data, or left in a poison queue): forget that they were sent, so the sweeper
-- sends them again. Returns how many tasks and jobs it reopened.
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

-- Operator retry of a failed job: the failed tasks of its failed stage go back to queued
-- with p_attempts more attempts, the stage and the job to processing. The only way out of
-- `failed` (schemas/status.py RECOVERY_TRANSITIONS).
CREATE FUNCTION retry_job(p_job_id text, p_attempts integer, p_actor text)
RETURNS TABLE (retried boolean, stage integer, task_count integer)
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
#variable_conflict use_column
DECLARE
    v_job jobs%ROWTYPE;
    v_stage job_stages%ROWTYPE;
    v_count integer;
BEGIN
    -- NO KEY UPDATE, as in stop_job: completions holding the fan-in lock may need KEY SHARE.
    SELECT * INTO v_job FROM jobs j WHERE j.job_id = p_job_id FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'retry_job: job % does not exist', p_job_id USING ERRCODE = 'no_data_found';
    END IF;
    -- The fan-in lock before the stage row, in the order finish_task takes them.
    PERFORM pg_advisory_xact_lock(hashtext(p_job_id), v_job.stage);
    SELECT * INTO v_stage FROM job_stages s
     WHERE s.job_id = p_job_id AND s.stage = v_job.stage FOR NO KEY UPDATE;
    IF v_job.status <> 'failed' OR v_stage.status <> 'failed' OR v_stage.failed_count = 0 THEN
        RETURN QUERY SELECT false, v_job.stage, 0;
        RETURN;
    END IF;
    UPDATE tasks t
       SET status = 'queued', max_attempts = t.attempt + p_attempts, result = NULL,
           finished_at = NULL, dispatched_at = NULL, next_attempt_at = NULL,
           claimed_by = NULL, heartbeat_at = NULL, updated_at = now()
     WHERE t.job_id = p_job_id AND t.stage = v_job.stage AND t.status = 'failed';
    GET DIAGNOSTICS v_count = ROW_COUNT;
    UPDATE job_stages s
       SET status = 'processing', remaining = s.remaining + v_count,
           failed_count = s.failed_count - v_count, finished_at = NULL
     WHERE s.job_id = p_job_id AND s.stage = v_job.stage;
    -- Stages the failure kept from starting wait again.
    UPDATE job_stages s SET status = 'pending', finished_at = NULL
     WHERE s.job_id = p_job_id AND s.stage > v_job.stage AND s.status = 'cancelled';
    UPDATE jobs j
       SET status = 'processing', error = NULL, finished_at = NULL, updated_at = now(),
           stage_results = j.stage_results - v_job.stage::text
     WHERE j.job_id = p_job_id;
    INSERT INTO job_events (job_id, stage, kind, from_status, to_status, actor, reason, detail)
    VALUES (p_job_id, v_job.stage, 'operator', 'failed', 'processing', p_actor,
            format('retry of %s failed tasks', v_count), v_job.error);
    RETURN QUERY SELECT true, v_job.stage, v_count;
END $$;

CREATE INDEX tasks_dispatched_waiting ON tasks (dispatched_at)
    WHERE status IN ('queued', 'retrying');
CREATE INDEX jobs_rerun_of ON jobs (rerun_of) WHERE rerun_of IS NOT NULL;
