-- Issue 9: a batch of task ends is recorded in a few set-based statements, not one
-- finish_task call (five statements) per task.
--
-- Each batch holds its stages' fan-in locks until it commits. One finish_task call costs
-- about 0.25 ms, so a batch of 200 ends held its stage for ~50 ms, and with two hosts
-- completing the same stage each batch waited for the other's: the last task of a stage
-- waited 50-250 ms to be recorded, and the stage transition with it (bench/PROFILE.md).
--
-- Same answers as before, row for row (tests/integration/test_batch_completion.py runs
-- both versions side by side): one row per element, in array order; a task named twice is
-- ended by its first mention only; a stale attempt or a task that is not processing
-- changes nothing; each applied end counts off its stage, and the counts a row returns
-- are its stage's just after that row, in array order; is_last_task is true for the
-- applied end that brings its stage to zero. Same locks, in the order finish_task and
-- stop_job take them: each stage's fan-in lock, by (job, stage), then the task rows by
-- task_id. The status test on tasks is written so no partial index can match it (0006).
CREATE OR REPLACE FUNCTION complete_tasks_and_check_stage(
    p_task_ids text[], p_attempts integer[], p_statuses text[], p_results jsonb[], p_errors jsonb[]
) RETURNS TABLE (task_id text, applied boolean, is_last_task boolean, task_count integer,
                 remaining integer, completed_count integer, failed_count integer)
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
#variable_conflict use_column
DECLARE
    v_bad record;
    v_stage record;
BEGIN
    IF cardinality(p_task_ids) IS DISTINCT FROM cardinality(p_attempts)
       OR cardinality(p_task_ids) IS DISTINCT FROM cardinality(p_statuses)
       OR cardinality(p_task_ids) IS DISTINCT FROM cardinality(p_results)
       OR cardinality(p_task_ids) IS DISTINCT FROM cardinality(p_errors) THEN
        RAISE EXCEPTION 'complete_tasks_and_check_stage: arrays differ in length (tasks %)',
            p_task_ids USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF coalesce(cardinality(p_task_ids), 0) = 0 THEN
        RETURN;
    END IF;
    SELECT i.id, i.status, i.error IS NULL AS no_error, t.task_id IS NULL AS missing
      INTO v_bad
      FROM unnest(p_task_ids, p_statuses, p_errors) WITH ORDINALITY AS i(id, status, error, ord)
      LEFT JOIN tasks t ON t.task_id = i.id
     WHERE i.status IS NULL OR i.status NOT IN ('completed', 'failed')
        OR (i.status = 'failed' AND i.error IS NULL) OR t.task_id IS NULL
     ORDER BY i.ord LIMIT 1;
    IF FOUND THEN
        -- The first bad element, checked as finish_task checks one.
        IF v_bad.status IS NULL OR v_bad.status NOT IN ('completed', 'failed') THEN
            RAISE EXCEPTION 'finish_task: % is not a finishing status (task %)', v_bad.status,
                v_bad.id USING ERRCODE = 'invalid_parameter_value';
        ELSIF v_bad.status = 'failed' AND v_bad.no_error THEN
            RAISE EXCEPTION 'finish_task: failing task % needs an error', v_bad.id
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        RAISE EXCEPTION 'finish_task: task % does not exist', v_bad.id
            USING ERRCODE = 'no_data_found';
    END IF;
    FOR v_stage IN
        SELECT DISTINCT t.job_id, t.stage FROM tasks t WHERE t.task_id = ANY (p_task_ids)
         ORDER BY t.job_id, t.stage
    LOOP
        PERFORM pg_advisory_xact_lock(hashtext(v_stage.job_id), v_stage.stage);
    END LOOP;
    PERFORM 1 FROM tasks t WHERE t.task_id = ANY (p_task_ids) ORDER BY t.task_id
        FOR NO KEY UPDATE;
    -- A new statement, so a new snapshot: it sees every end committed before the locks.
    RETURN QUERY
    WITH input AS (
        SELECT i.id, i.attempt, i.status, i.result, i.error, i.ord, t.job_id, t.stage,
               t.status AS was, t.attempt AS held
          FROM unnest(p_task_ids, p_attempts, p_statuses, p_results, p_errors)
               WITH ORDINALITY AS i(id, attempt, status, result, error, ord)
          JOIN tasks t ON t.task_id = i.id
    ), chosen AS (
        SELECT DISTINCT ON (i.id) i.* FROM input i
         WHERE CASE WHEN i.was = 'processing' THEN true END
           AND (i.attempt IS NULL OR i.held = i.attempt)
         ORDER BY i.id, i.ord
    ), ended AS (
        UPDATE tasks t
           SET status = c.status, result = c.result, error = coalesce(c.error, t.error),
               finished_at = now(), updated_at = now(), heartbeat_at = NULL
          FROM chosen c
         WHERE t.task_id = c.id
        RETURNING t.task_id
    ), per_stage AS (
        SELECT c.job_id, c.stage, count(*)::integer AS n,
               count(*) FILTER (WHERE c.status = 'completed')::integer AS completed,
               count(*) FILTER (WHERE c.status = 'failed')::integer AS failed
          FROM chosen c JOIN ended e ON e.task_id = c.id
         GROUP BY c.job_id, c.stage
    ), counted AS (
        UPDATE job_stages s
           SET remaining = s.remaining - p.n,
               completed_count = s.completed_count + p.completed,
               failed_count = s.failed_count + p.failed
          FROM per_stage p
         WHERE s.job_id = p.job_id AND s.stage = p.stage
        RETURNING s.job_id, s.stage, s.task_count,
                  s.remaining + p.n AS remaining, s.completed_count - p.completed AS completed,
                  s.failed_count - p.failed AS failed
    ), events AS (
        INSERT INTO job_events (job_id, stage, task_id, kind, from_status, to_status, actor,
                                reason, detail)
        SELECT c.job_id, c.stage, c.id, 'task_failed', 'processing', 'failed', 'worker',
               c.error ->> 'message', c.error
          FROM chosen c JOIN ended e ON e.task_id = c.id
         WHERE c.status = 'failed'
         ORDER BY c.ord
    ), marked AS (
        SELECT i.id, i.ord, i.job_id, i.stage, (c.id IS NOT NULL) AS applied,
               sum((c.id IS NOT NULL)::integer) OVER w AS applied_so_far,
               sum((c.status = 'completed')::integer) OVER w AS completed_so_far,
               sum((c.status = 'failed')::integer) OVER w AS failed_so_far
          FROM input i LEFT JOIN chosen c ON c.id = i.id AND c.ord = i.ord
        WINDOW w AS (PARTITION BY i.job_id, i.stage ORDER BY i.ord)
    )
    SELECT m.id, m.applied,
           m.applied AND b.remaining - m.applied_so_far = 0,
           b.task_count, (b.remaining - m.applied_so_far)::integer,
           (b.completed + coalesce(m.completed_so_far, 0))::integer,
           (b.failed + coalesce(m.failed_so_far, 0))::integer
      FROM marked m
      JOIN LATERAL (
          SELECT k.task_count, k.remaining, k.completed, k.failed FROM counted k
           WHERE k.job_id = m.job_id AND k.stage = m.stage
          UNION ALL
          SELECT s.task_count, s.remaining, s.completed_count, s.failed_count FROM job_stages s
           WHERE s.job_id = m.job_id AND s.stage = m.stage
             AND NOT EXISTS (SELECT 1 FROM per_stage p
                              WHERE p.job_id = m.job_id AND p.stage = m.stage)
      ) b ON true
     ORDER BY m.ord;
END $$;
