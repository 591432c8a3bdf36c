-- Issue 9: a stage's tasks may be created in two transactions, so that the first message's
-- worth can be claimed while the rest are still being written.
--
-- Creating a 10,000-task stage is one COPY of ~60-100 ms (PostgreSQL maintaining three
-- indexes), and the stage's first task could be claimed only after it committed: most of
-- the stage transition at N = 10,000 (bench/PROFILE.md). The process that builds a stage
-- now starts it with the first message's tasks (start_stage_in_parts) and creates the
-- rest in a second transaction (create_rest_of_stage) while a local thread runs the first.
--
-- `uncreated` counts the stage's tasks not created yet; they are in `remaining` (the
-- counts still add up to task_count), so the stage cannot end before they exist and ran.
-- Until the rest is created the job's outbox marker is unset, so a process that dies in
-- between leaves a stage message the sweeper sends (after the dispatch lease, if any);
-- the stage message's handler finds the stage started with tasks uncreated, builds the
-- stage again (builds are deterministic: ids are positions) and creates the rest. A job
-- stopped meanwhile counts its uncreated tasks cancelled; an operator's retry counts them
-- back and sends the stage message again.
ALTER TABLE job_stages ADD COLUMN uncreated integer NOT NULL DEFAULT 0;
ALTER TABLE job_stages ADD CONSTRAINT stage_uncreated_in_range
    CHECK (uncreated >= 0 AND uncreated <= task_count);

-- start_stage, with only the first p_created of p_task_count tasks created in this
-- transaction; the job's stage message is due until the rest are (unless a pause holds it).
CREATE FUNCTION start_stage_in_parts(
    p_job_id text, p_stage integer, p_task_count integer, p_created integer
) RETURNS boolean
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    IF p_created IS NULL OR p_created < 0 OR p_created > p_task_count THEN
        RAISE EXCEPTION 'start_stage_in_parts: % of % tasks created (job % stage %)',
            p_created, p_task_count, p_job_id, p_stage USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF NOT start_stage(p_job_id, p_stage, p_task_count) THEN
        RETURN false;
    END IF;
    IF p_created < p_task_count THEN
        UPDATE job_stages s SET uncreated = p_task_count - p_created
         WHERE s.job_id = p_job_id AND s.stage = p_stage;
        UPDATE jobs j SET dispatched_at = NULL, updated_at = now()
         WHERE j.job_id = p_job_id AND j.dispatched_at IS DISTINCT FROM pause_hold();
    END IF;
    RETURN true;
END $$;

-- Take the creation of a started stage's uncreated tasks: returns the index of the first
-- one, which this transaction then creates up to the last, or NULL when there is nothing
-- to create (all created, or the stage no longer processing). The job's row stays locked
-- until this transaction ends, as start_stage keeps it: two processes cannot both take the
-- stage, and a stop_job or retry_job (which lock that row first) waits for the new tasks
-- and then sees them. p_task_count is what the caller's build made: a different count
-- from the stage's is an error.
CREATE FUNCTION create_rest_of_stage(p_job_id text, p_stage integer, p_task_count integer)
RETURNS integer
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    v_stage job_stages%ROWTYPE;
BEGIN
    PERFORM 1 FROM jobs j WHERE j.job_id = p_job_id FOR NO KEY UPDATE;
    SELECT * INTO v_stage FROM job_stages s
     WHERE s.job_id = p_job_id AND s.stage = p_stage FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'create_rest_of_stage: job % has no stage %', p_job_id, p_stage
            USING ERRCODE = 'no_data_found';
    END IF;
    IF v_stage.status <> 'processing' OR v_stage.uncreated = 0 THEN
        RETURN NULL;
    END IF;
    IF p_task_count <> v_stage.task_count THEN
        RAISE EXCEPTION 'create_rest_of_stage: stage % of job % was started with % tasks, but its build now made %: a stage''s build must make the same tasks each time',
            p_stage, p_job_id, v_stage.task_count, p_task_count
            USING ERRCODE = 'data_exception';
    END IF;
    UPDATE job_stages s SET uncreated = 0 WHERE s.job_id = p_job_id AND s.stage = p_stage;
    RETURN v_stage.task_count - v_stage.uncreated;
END $$;

CREATE OR REPLACE FUNCTION stop_job(
    p_job_id text, p_status text, p_error jsonb, p_actor text, p_reason text,
    p_stage integer DEFAULT NULL
) RETURNS TABLE (stopped boolean, status text)
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
#variable_conflict use_column
DECLARE
    v_job jobs%ROWTYPE;
BEGIN
    IF p_status NOT IN ('failed', 'cancelled') THEN
        RAISE EXCEPTION 'stop_job: % is not failed or cancelled (job %)', p_status, p_job_id
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_status = 'failed' AND p_error IS NULL THEN
        RAISE EXCEPTION 'stop_job: failing job % needs an error', p_job_id
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- NO KEY UPDATE: a batch of completions that holds this job's fan-in lock re-checks its
    -- stage row's foreign key (FOR KEY SHARE of this row) and must not wait for us while
    -- we wait for that lock.
    SELECT * INTO v_job FROM jobs j WHERE j.job_id = p_job_id FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'stop_job: job % does not exist', p_job_id USING ERRCODE = 'no_data_found';
    END IF;
    IF v_job.status NOT IN ('queued', 'processing') OR v_job.stage <> coalesce(p_stage, v_job.stage) THEN
        RETURN QUERY SELECT false, v_job.status;
        RETURN;
    END IF;
    -- The stages' fan-in locks before their task rows, in the order finish_task takes them.
    PERFORM pg_advisory_xact_lock(hashtext(p_job_id), s.stage)
       FROM job_stages s WHERE s.job_id = p_job_id AND s.status = 'processing' ORDER BY s.stage;
    WITH cancelled_tasks AS (
        UPDATE tasks t SET status = 'cancelled', finished_at = now(), updated_at = now(),
                           heartbeat_at = NULL
         WHERE t.job_id = p_job_id AND t.status IN ('queued', 'processing', 'retrying')
        RETURNING t.stage
    ), per_stage AS (
        SELECT c.stage, count(*)::integer AS n FROM cancelled_tasks c GROUP BY c.stage
    )
    UPDATE job_stages s SET remaining = s.remaining - p.n, cancelled_count = s.cancelled_count + p.n
      FROM per_stage p WHERE s.job_id = p_job_id AND s.stage = p.stage;
    -- Tasks of a stage still being created that never were are cancelled too, as counts:
    -- the stage ends with none remaining. `uncreated` stays, for a retry of the job.
    UPDATE job_stages s
       SET remaining = s.remaining - s.uncreated, cancelled_count = s.cancelled_count + s.uncreated
     WHERE s.job_id = p_job_id AND s.status = 'processing' AND s.uncreated > 0;
    -- Each stage that ends here gets its stage_status event, as in advance_job_stage.
    WITH ending AS (
        SELECT s.stage, s.status AS from_status,
               CASE WHEN p_status = 'failed' AND s.status = 'processing' THEN 'failed'
                    ELSE 'cancelled' END AS to_status
          FROM job_stages s
         WHERE s.job_id = p_job_id AND s.status IN ('pending', 'processing')
    ), ended AS (
        UPDATE job_stages s SET status = e.to_status, finished_at = now()
          FROM ending e WHERE s.job_id = p_job_id AND s.stage = e.stage
        RETURNING e.stage, e.from_status, e.to_status
    )
    INSERT INTO job_events (job_id, stage, kind, from_status, to_status, actor, reason)
    SELECT p_job_id, d.stage, 'stage_status', d.from_status, d.to_status, p_actor, p_reason
      FROM ended d ORDER BY d.stage;
    UPDATE jobs j SET status = p_status, error = p_error, finished_at = now(), updated_at = now()
     WHERE j.job_id = p_job_id;
    INSERT INTO job_events (job_id, stage, kind, from_status, to_status, actor, reason, detail)
    VALUES (p_job_id, v_job.stage, 'job_status', v_job.status, p_status, p_actor, p_reason, p_error);
    RETURN QUERY SELECT true, p_status;
END $$;

CREATE OR REPLACE FUNCTION retry_job(p_job_id text, p_attempts integer, p_actor text)
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
    -- Tasks the stop found uncreated (stop_job counted them cancelled) are to be created
    -- again: back into remaining; the job's stage message is due again, which the engine
    -- (or the sweeper) sends, and it creates them.
    UPDATE job_stages s
       SET status = 'processing', remaining = s.remaining + v_count + s.uncreated,
           failed_count = s.failed_count - v_count, cancelled_count = s.cancelled_count - s.uncreated,
           finished_at = NULL
     WHERE s.job_id = p_job_id AND s.stage = v_job.stage;
    -- Stages the failure kept from starting wait again.
    UPDATE job_stages s SET status = 'pending', finished_at = NULL
     WHERE s.job_id = p_job_id AND s.stage > v_job.stage AND s.status = 'cancelled';
    UPDATE jobs j
       SET status = 'processing', error = NULL, finished_at = NULL, updated_at = now(),
           stage_results = j.stage_results - v_job.stage::text,
           dispatched_at = CASE WHEN v_stage.uncreated > 0 THEN NULL ELSE j.dispatched_at END
     WHERE j.job_id = p_job_id;
    INSERT INTO job_events (job_id, stage, kind, from_status, to_status, actor, reason, detail)
    VALUES (p_job_id, v_job.stage, 'operator', 'failed', 'processing', p_actor,
            format('retry of %s failed tasks', v_count), v_job.error);
    RETURN QUERY SELECT true, v_job.stage, v_count;
END $$;
