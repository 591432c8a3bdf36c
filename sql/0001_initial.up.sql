-- Lightsout schema: jobs, their stages (the O(1) fan-in counters), tasks, events,
-- poison records. The runner sets search_path to the configured schema; every
-- function keeps that path (SET search_path FROM CURRENT), so no name is qualified.

CREATE TABLE jobs (
    job_id        text PRIMARY KEY,
    job_type      text NOT NULL,
    status        text NOT NULL DEFAULT 'queued',
    stage         integer NOT NULL DEFAULT 1,
    total_stages  integer NOT NULL,
    parameters    jsonb NOT NULL DEFAULT '{}',
    stage_results jsonb NOT NULL DEFAULT '{}',
    result        jsonb,
    error         jsonb,
    rerun_of      text REFERENCES jobs (job_id),
    dispatched_at timestamptz,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    finished_at   timestamptz,
    CONSTRAINT job_id_is_sha256 CHECK (job_id ~ '^[0-9a-f]{64}$'),
    CONSTRAINT job_status_known CHECK (status IN
        ('queued', 'processing', 'completed', 'completed_with_errors', 'failed', 'cancelled')),
    CONSTRAINT job_stage_in_range CHECK (stage BETWEEN 1 AND total_stages),
    CONSTRAINT job_finished_has_time CHECK (
        (status IN ('completed', 'completed_with_errors', 'failed', 'cancelled'))
        = (finished_at IS NOT NULL)),
    CONSTRAINT job_failed_has_error CHECK (status <> 'failed' OR error IS NOT NULL),
    CONSTRAINT job_parameters_is_object CHECK (jsonb_typeof(parameters) = 'object'),
    CONSTRAINT job_stage_results_is_object CHECK (jsonb_typeof(stage_results) = 'object')
);

CREATE INDEX jobs_by_created ON jobs (created_at DESC, job_id DESC);
CREATE INDEX jobs_by_status ON jobs (status, created_at DESC, job_id DESC);
CREATE INDEX jobs_by_type ON jobs (job_type, created_at DESC, job_id DESC);
CREATE INDEX jobs_undispatched ON jobs (updated_at)
    WHERE dispatched_at IS NULL AND status IN ('queued', 'processing');

CREATE TABLE job_stages (
    job_id          text NOT NULL REFERENCES jobs (job_id) ON DELETE CASCADE,
    stage           integer NOT NULL,
    name            text NOT NULL,
    status          text NOT NULL DEFAULT 'pending',
    task_count      integer NOT NULL DEFAULT 0,
    remaining       integer NOT NULL DEFAULT 0,
    completed_count integer NOT NULL DEFAULT 0,
    failed_count    integer NOT NULL DEFAULT 0,
    cancelled_count integer NOT NULL DEFAULT 0,
    started_at      timestamptz,
    finished_at     timestamptz,
    PRIMARY KEY (job_id, stage),
    CONSTRAINT stage_status_known CHECK (status IN
        ('pending', 'processing', 'completed', 'completed_with_errors', 'failed', 'cancelled')),
    CONSTRAINT stage_counts_not_negative CHECK (
        remaining >= 0 AND completed_count >= 0 AND failed_count >= 0 AND cancelled_count >= 0),
    CONSTRAINT stage_counts_add_up CHECK (
        remaining + completed_count + failed_count + cancelled_count = task_count),
    CONSTRAINT stage_started_has_time CHECK (status IN ('pending', 'cancelled') OR started_at IS NOT NULL),
    CONSTRAINT stage_finished_has_time CHECK (
        (status IN ('completed', 'completed_with_errors', 'failed', 'cancelled'))
        = (finished_at IS NOT NULL)),
    CONSTRAINT stage_ended_has_no_remaining CHECK (
        status NOT IN ('completed', 'completed_with_errors', 'failed') OR remaining = 0)
);

CREATE INDEX job_stages_awaiting_advance ON job_stages (job_id)
    WHERE status = 'processing' AND remaining = 0;

CREATE TABLE tasks (
    task_id         text PRIMARY KEY,
    job_id          text NOT NULL,
    stage           integer NOT NULL,
    task_index      integer NOT NULL,
    task_type       text NOT NULL,
    status          text NOT NULL DEFAULT 'queued',
    parameters      jsonb NOT NULL DEFAULT '{}',
    result          jsonb,
    error           jsonb,
    attempt         integer NOT NULL DEFAULT 0,
    max_attempts    integer NOT NULL DEFAULT 3,
    claimed_by      text,
    claimed_at      timestamptz,
    heartbeat_at    timestamptz,
    next_attempt_at timestamptz,
    dispatched_at   timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz,
    FOREIGN KEY (job_id, stage) REFERENCES job_stages (job_id, stage) ON DELETE CASCADE,
    CONSTRAINT task_position_unique UNIQUE (job_id, stage, task_index),
    CONSTRAINT task_id_is_deterministic CHECK (
        task_id = job_id || '-s' || stage::text || '-t' || task_index::text),
    CONSTRAINT task_status_known CHECK (status IN
        ('queued', 'processing', 'retrying', 'completed', 'failed', 'cancelled')),
    CONSTRAINT task_attempt_in_range CHECK (attempt BETWEEN 0 AND max_attempts),
    CONSTRAINT task_max_attempts_positive CHECK (max_attempts >= 1),
    CONSTRAINT task_processing_is_claimed CHECK (
        status <> 'processing' OR (claimed_by IS NOT NULL AND attempt >= 1)),
    CONSTRAINT task_finished_has_time CHECK (
        (status IN ('completed', 'failed', 'cancelled')) = (finished_at IS NOT NULL)),
    CONSTRAINT task_failed_has_error CHECK (status <> 'failed' OR error IS NOT NULL)
);

CREATE INDEX tasks_undispatched ON tasks (job_id, stage)
    WHERE dispatched_at IS NULL AND status IN ('queued', 'retrying');
CREATE INDEX tasks_running_by_heartbeat ON tasks (heartbeat_at) WHERE status = 'processing';

CREATE TABLE job_events (
    event_id    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id      text NOT NULL REFERENCES jobs (job_id) ON DELETE CASCADE,
    stage       integer,
    task_id     text,
    kind        text NOT NULL,
    from_status text,
    to_status   text,
    actor       text NOT NULL DEFAULT 'engine',
    reason      text,
    detail      jsonb,
    created_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT event_kind_known CHECK (kind IN
        ('job_status', 'stage_status', 'task_failed', 'task_retry', 'repair', 'operator', 'poison'))
);

CREATE INDEX job_events_by_job ON job_events (job_id, event_id);

CREATE TABLE poison_messages (
    poison_id     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    queue_name    text NOT NULL,
    message_id    text NOT NULL,
    body          text NOT NULL,
    dequeue_count integer NOT NULL DEFAULT 0,
    reason        text NOT NULL,
    job_id        text,
    task_ids      text[] NOT NULL DEFAULT '{}',
    received_at   timestamptz NOT NULL DEFAULT now(),
    replayed_at   timestamptz,
    CONSTRAINT poison_message_once UNIQUE (queue_name, message_id)
);

CREATE INDEX poison_messages_by_received ON poison_messages (received_at DESC, poison_id DESC);

-- Submit: the job row and its pending stage rows in one statement's transaction.
CREATE FUNCTION submit_job(
    p_job_id text, p_job_type text, p_parameters jsonb, p_stage_names text[],
    p_rerun_of text DEFAULT NULL, p_actor text DEFAULT 'api'
) RETURNS boolean
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
#variable_conflict use_column
BEGIN
    IF coalesce(cardinality(p_stage_names), 0) = 0 THEN
        RAISE EXCEPTION 'submit_job: job % of type % declares no stage', p_job_id, p_job_type
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    INSERT INTO jobs (job_id, job_type, total_stages, parameters, rerun_of)
    VALUES (p_job_id, p_job_type, cardinality(p_stage_names), p_parameters, p_rerun_of)
    ON CONFLICT (job_id) DO NOTHING;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    INSERT INTO job_stages (job_id, stage, name)
    SELECT p_job_id, n, name FROM unnest(p_stage_names) WITH ORDINALITY AS s(name, n);
    INSERT INTO job_events (job_id, kind, to_status, actor, reason, detail)
    VALUES (p_job_id, 'job_status', 'queued', p_actor, 'submitted',
            CASE WHEN p_rerun_of IS NULL THEN NULL ELSE jsonb_build_object('rerun_of', p_rerun_of) END);
    RETURN true;
END $$;

-- Start a stage: pending -> processing with its task count; the job starts with stage 1.
-- Returns false when the stage was started already (a redelivered job message).
CREATE FUNCTION start_stage(p_job_id text, p_stage integer, p_task_count integer)
RETURNS boolean
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
#variable_conflict use_column
DECLARE
    v_job jobs%ROWTYPE;
BEGIN
    IF p_task_count < 0 THEN
        RAISE EXCEPTION 'start_stage: negative task count % for job % stage %',
            p_task_count, p_job_id, p_stage USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT * INTO v_job FROM jobs WHERE job_id = p_job_id FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'start_stage: job % does not exist', p_job_id USING ERRCODE = 'no_data_found';
    END IF;
    IF v_job.status NOT IN ('queued', 'processing') OR v_job.stage <> p_stage THEN
        RETURN false;
    END IF;
    UPDATE job_stages
       SET status = 'processing', task_count = p_task_count, remaining = p_task_count,
           started_at = now()
     WHERE job_id = p_job_id AND stage = p_stage AND status = 'pending';
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    INSERT INTO job_events (job_id, stage, kind, from_status, to_status, detail)
    VALUES (p_job_id, p_stage, 'stage_status', 'pending', 'processing',
            jsonb_build_object('task_count', p_task_count));
    IF v_job.status = 'queued' THEN
        UPDATE jobs SET status = 'processing', updated_at = now() WHERE job_id = p_job_id;
        INSERT INTO job_events (job_id, stage, kind, from_status, to_status)
        VALUES (p_job_id, p_stage, 'job_status', 'queued', 'processing');
    END IF;
    RETURN true;
END $$;

-- Claim tasks for one attempt each (compare-and-set). A task already claimed,
-- terminal, out of attempts, or of a job that is not processing is not returned.
-- Rows are locked in task_id order, so concurrent claims of overlapping sets cannot deadlock.
CREATE FUNCTION claim_tasks(p_task_ids text[], p_worker text)
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

-- Finish a task (completed or failed) and count it off its stage under the
-- (job, stage) advisory lock. p_attempt NULL means "whatever attempt" (poison, janitor).
CREATE FUNCTION finish_task(
    p_task_id text, p_attempt integer, p_status text, p_result jsonb, p_error jsonb,
    p_from text[], p_actor text, p_reason text
) RETURNS TABLE (applied boolean, is_last_task boolean, task_count integer, remaining integer,
                 completed_count integer, failed_count integer)
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
#variable_conflict use_column
DECLARE
    v_job text;
    v_stage integer;
    v_from text;
    v_attempt integer;
    v_counts job_stages%ROWTYPE;
BEGIN
    IF p_status NOT IN ('completed', 'failed') THEN
        RAISE EXCEPTION 'finish_task: % is not a finishing status (task %)', p_status, p_task_id
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_status = 'failed' AND p_error IS NULL THEN
        RAISE EXCEPTION 'finish_task: failing task % needs an error', p_task_id
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT t.job_id, t.stage INTO v_job, v_stage FROM tasks t WHERE t.task_id = p_task_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'finish_task: task % does not exist', p_task_id USING ERRCODE = 'no_data_found';
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext(v_job), v_stage);
    SELECT t.status, t.attempt INTO v_from, v_attempt FROM tasks t WHERE t.task_id = p_task_id FOR NO KEY UPDATE;
    IF v_from <> ALL (p_from) OR (p_attempt IS NOT NULL AND v_attempt <> p_attempt) THEN
        RETURN QUERY SELECT false, false, s.task_count, s.remaining, s.completed_count, s.failed_count
                       FROM job_stages s WHERE s.job_id = v_job AND s.stage = v_stage;
        RETURN;
    END IF;
    UPDATE tasks t
       SET status = p_status, result = p_result, error = coalesce(p_error, t.error),
           finished_at = now(), updated_at = now(), heartbeat_at = NULL
     WHERE t.task_id = p_task_id;
    UPDATE job_stages s
       SET remaining = s.remaining - 1,
           completed_count = s.completed_count + (p_status = 'completed')::integer,
           failed_count = s.failed_count + (p_status = 'failed')::integer
     WHERE s.job_id = v_job AND s.stage = v_stage
    RETURNING * INTO v_counts;
    IF p_status = 'failed' THEN
        INSERT INTO job_events (job_id, stage, task_id, kind, from_status, to_status, actor, reason, detail)
        VALUES (v_job, v_stage, p_task_id, 'task_failed', v_from, 'failed', p_actor,
                coalesce(p_reason, p_error ->> 'message'), p_error);
    END IF;
    RETURN QUERY SELECT true, v_counts.remaining = 0, v_counts.task_count, v_counts.remaining,
                        v_counts.completed_count, v_counts.failed_count;
END $$;

-- The fan-in primitive (DESIGN invariant 4): exactly one call per (job, stage) returns
-- is_last_task; a stale attempt (fencing token) or a terminal task changes nothing.
CREATE FUNCTION complete_task_and_check_stage(
    p_task_id text, p_attempt integer, p_status text, p_result jsonb DEFAULT NULL,
    p_error jsonb DEFAULT NULL
) RETURNS TABLE (applied boolean, is_last_task boolean, task_count integer, remaining integer,
                 completed_count integer, failed_count integer)
LANGUAGE sql SET search_path FROM CURRENT AS $$
    SELECT * FROM finish_task(p_task_id, p_attempt, p_status, p_result, p_error,
                              ARRAY['processing'], 'worker', NULL);
$$;

-- Several completions of one message's tasks in one round trip and one transaction; each
-- is still fenced by its own attempt and counted off on its own, in array order.
CREATE FUNCTION complete_tasks_and_check_stage(
    p_task_ids text[], p_attempts integer[], p_statuses text[], p_results jsonb[], p_errors jsonb[]
) RETURNS TABLE (task_id text, applied boolean, is_last_task boolean, task_count integer,
                 remaining integer, completed_count integer, failed_count integer)
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
#variable_conflict use_column
BEGIN
    IF cardinality(p_task_ids) IS DISTINCT FROM cardinality(p_attempts)
       OR cardinality(p_task_ids) IS DISTINCT FROM cardinality(p_statuses)
       OR cardinality(p_task_ids) IS DISTINCT FROM cardinality(p_results)
       OR cardinality(p_task_ids) IS DISTINCT FROM cardinality(p_errors) THEN
        RAISE EXCEPTION 'complete_tasks_and_check_stage: arrays differ in length (tasks %)',
            p_task_ids USING ERRCODE = 'invalid_parameter_value';
    END IF;
    FOR i IN 1 .. coalesce(cardinality(p_task_ids), 0) LOOP
        RETURN QUERY
            SELECT p_task_ids[i], f.* FROM finish_task(
                p_task_ids[i], p_attempts[i], p_statuses[i], p_results[i], p_errors[i],
                ARRAY['processing'], 'worker', NULL) f;
    END LOOP;
END $$;

-- Fail a task whatever attempt it is at (poison message, janitor), counting it off its stage.
CREATE FUNCTION fail_task_and_check_stage(
    p_task_id text, p_error jsonb, p_actor text, p_reason text
) RETURNS TABLE (applied boolean, is_last_task boolean, task_count integer, remaining integer,
                 completed_count integer, failed_count integer)
LANGUAGE sql SET search_path FROM CURRENT AS $$
    SELECT * FROM finish_task(p_task_id, NULL, 'failed', NULL, p_error,
                              ARRAY['queued', 'processing', 'retrying'], p_actor, p_reason);
$$;

-- processing -> retrying for the claimed attempt; the message is re-sent after p_delay.
CREATE FUNCTION retry_task(p_task_id text, p_attempt integer, p_error jsonb, p_delay interval)
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
     WHERE task_id = p_task_id AND status = 'processing' AND attempt = p_attempt
       AND attempt < max_attempts
    RETURNING job_id, stage INTO v_job, v_stage;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    INSERT INTO job_events (job_id, stage, task_id, kind, from_status, to_status, reason, detail)
    VALUES (v_job, v_stage, p_task_id, 'task_retry', 'processing', 'retrying',
            p_error ->> 'message', p_error || jsonb_build_object('delay_s', extract(epoch FROM p_delay)));
    RETURN true;
END $$;

-- Leave stage p_stage: record its result under the key "p_stage" and move the job to the
-- next stage, or finish it when p_job_status is given. Only a job still at p_stage moves.
CREATE FUNCTION advance_job_stage(
    p_job_id text, p_stage integer, p_stage_status text, p_stage_result jsonb,
    p_job_status text DEFAULT NULL, p_job_result jsonb DEFAULT NULL, p_job_error jsonb DEFAULT NULL,
    p_actor text DEFAULT 'engine'
) RETURNS TABLE (advanced boolean, status text, stage integer)
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
#variable_conflict use_column
DECLARE
    v_job jobs%ROWTYPE;
BEGIN
    IF p_stage_status NOT IN ('completed', 'completed_with_errors', 'failed') THEN
        RAISE EXCEPTION 'advance_job_stage: % is not a final stage status (job % stage %)',
            p_stage_status, p_job_id, p_stage USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_job_status IS NOT NULL AND p_job_status NOT IN ('completed', 'completed_with_errors', 'failed') THEN
        RAISE EXCEPTION 'advance_job_stage: % is not a final job status (job %)', p_job_status, p_job_id
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT * INTO v_job FROM jobs j WHERE j.job_id = p_job_id FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'advance_job_stage: job % does not exist', p_job_id USING ERRCODE = 'no_data_found';
    END IF;
    IF v_job.status <> 'processing' OR v_job.stage <> p_stage THEN
        RETURN QUERY SELECT false, v_job.status, v_job.stage;
        RETURN;
    END IF;
    IF p_job_status IS NULL AND p_stage >= v_job.total_stages THEN
        RAISE EXCEPTION 'advance_job_stage: stage % is the last of job %; give a final status',
            p_stage, p_job_id USING ERRCODE = 'invalid_parameter_value';
    END IF;
    UPDATE job_stages s SET status = p_stage_status, finished_at = now()
     WHERE s.job_id = p_job_id AND s.stage = p_stage AND s.status = 'processing' AND s.remaining = 0;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'advance_job_stage: stage % of job % is not processing with no task remaining',
            p_stage, p_job_id USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    UPDATE jobs j
       SET stage = CASE WHEN p_job_status IS NULL THEN p_stage + 1 ELSE p_stage END,
           status = coalesce(p_job_status, 'processing'),
           stage_results = j.stage_results || jsonb_build_object(p_stage::text, p_stage_result),
           result = p_job_result, error = p_job_error,
           dispatched_at = CASE WHEN p_job_status IS NULL THEN NULL ELSE j.dispatched_at END,
           finished_at = CASE WHEN p_job_status IS NULL THEN NULL ELSE now() END,
           updated_at = now()
     WHERE j.job_id = p_job_id
    RETURNING * INTO v_job;
    INSERT INTO job_events (job_id, stage, kind, from_status, to_status, actor)
    VALUES (p_job_id, p_stage, 'stage_status', 'processing', p_stage_status, p_actor);
    IF p_job_status = 'failed' THEN
        -- The stages the failure kept from starting end too, as stop_job ends them.
        WITH ended AS (
            UPDATE job_stages s SET status = 'cancelled', finished_at = now()
             WHERE s.job_id = p_job_id AND s.stage > p_stage AND s.status = 'pending'
            RETURNING s.stage
        )
        INSERT INTO job_events (job_id, stage, kind, from_status, to_status, actor, reason)
        SELECT p_job_id, e.stage, 'stage_status', 'pending', 'cancelled', p_actor,
               format('stage %s failed', p_stage)
          FROM ended e ORDER BY e.stage;
    END IF;
    IF p_job_status IS NOT NULL THEN
        INSERT INTO job_events (job_id, stage, kind, from_status, to_status, actor, detail)
        VALUES (p_job_id, p_stage, 'job_status', 'processing', p_job_status, p_actor, p_job_error);
    END IF;
    RETURN QUERY SELECT true, v_job.status, v_job.stage;
END $$;

-- End a job that has not finished, as cancelled (operator) or failed (a reason the engine
-- found): its open tasks are cancelled and counted off; its current stage ends failed (for a
-- failed job) or cancelled, and the stages it never reached end cancelled.
CREATE FUNCTION stop_job(
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

CREATE FUNCTION cancel_job(p_job_id text, p_actor text, p_reason text)
RETURNS TABLE (cancelled boolean, status text)
LANGUAGE sql SET search_path FROM CURRENT AS $$
    SELECT * FROM stop_job(p_job_id, 'cancelled', NULL, p_actor, p_reason);
$$;

-- p_stage, when given, fails the job only while it is still at that stage (a poisoned
-- job message for a stage the job has left must not fail it).
CREATE FUNCTION fail_job(
    p_job_id text, p_error jsonb, p_actor text, p_reason text, p_stage integer DEFAULT NULL
) RETURNS TABLE (failed boolean, status text)
LANGUAGE sql SET search_path FROM CURRENT AS $$
    SELECT * FROM stop_job(p_job_id, 'failed', p_error, p_actor, p_reason, p_stage);
$$;
