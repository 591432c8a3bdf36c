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

DROP FUNCTION create_rest_of_stage(text, integer, integer);
DROP FUNCTION start_stage_in_parts(text, integer, integer, integer);
ALTER TABLE job_stages DROP CONSTRAINT stage_uncreated_in_range;
ALTER TABLE job_stages DROP COLUMN uncreated;
