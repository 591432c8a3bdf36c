-- The operator's API: job-type pauses, per-task progress, and the indexes its reads need.

-- A row here means the job type is paused; resume deletes it. The pause and the resume are
-- also recorded as 'operator' events on every unfinished job of the type.
CREATE TABLE job_type_pauses (
    job_type  text PRIMARY KEY,
    paused_by text NOT NULL,
    paused_at timestamptz NOT NULL DEFAULT now(),
    reason    text
);

-- Progress belongs to the attempt that reported it: a retried task starts again from nothing
-- without claim_tasks having to clear it.
ALTER TABLE tasks
    ADD COLUMN progress         double precision,
    ADD COLUMN progress_message text,
    ADD COLUMN progress_attempt integer,
    ADD COLUMN progress_at      timestamptz,
    ADD CONSTRAINT task_progress_is_fraction CHECK (progress IS NULL OR progress BETWEEN 0 AND 1);

-- The running tasks of one stage (progress, diagnose) without reading the whole stage.
CREATE INDEX tasks_running_by_stage ON tasks (job_id, stage) WHERE status = 'processing';
-- Workers that claimed something lately.
CREATE INDEX tasks_by_claimed_at ON tasks (claimed_at) WHERE claimed_at IS NOT NULL;
CREATE INDEX poison_messages_by_job ON poison_messages (job_id) WHERE job_id IS NOT NULL;

-- The dispatched_at of a message held back by a pause. The sweeper sends only rows whose
-- dispatched_at IS NULL and the idle re-opener only those sent before now, so a held row
-- stays put until resume_job_type clears it.
CREATE FUNCTION pause_hold() RETURNS timestamptz
LANGUAGE sql IMMUTABLE SET search_path FROM CURRENT AS $$
    SELECT timestamptz '9999-12-31 00:00:00+00';
$$;

-- A sent job message never overwrites a pause's hold on the stage: the stage is held
-- whether the message was marked sent before or after it was processed (a process that
-- enters a stage itself marks it after building it, and that build may be the one held).
CREATE OR REPLACE FUNCTION mark_job_dispatched(p_job_id text, p_stage integer)
RETURNS boolean
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    UPDATE jobs j SET dispatched_at = now()
     WHERE j.job_id = p_job_id AND j.stage = p_stage AND j.status IN ('queued', 'processing')
       AND j.dispatched_at IS DISTINCT FROM pause_hold();
    RETURN FOUND;
END $$;

CREATE FUNCTION pause_job_type(p_job_type text, p_actor text, p_reason text)
RETURNS TABLE (paused_now boolean, paused_by text, paused_at timestamptz)
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
#variable_conflict use_column
DECLARE
    v_new boolean;
BEGIN
    INSERT INTO job_type_pauses (job_type, paused_by, reason) VALUES (p_job_type, p_actor, p_reason)
    ON CONFLICT (job_type) DO NOTHING;
    v_new := FOUND;
    IF v_new THEN
        INSERT INTO job_events (job_id, stage, kind, actor, reason, detail)
        SELECT j.job_id, j.stage, 'operator', p_actor,
               coalesce(p_reason, format('job type %s paused', p_job_type)),
               jsonb_build_object('action', 'pause', 'job_type', p_job_type)
          FROM jobs j WHERE j.job_type = p_job_type AND j.status IN ('queued', 'processing')
         ORDER BY j.job_id;
    END IF;
    RETURN QUERY SELECT v_new, p.paused_by, p.paused_at
                   FROM job_type_pauses p WHERE p.job_type = p_job_type;
END $$;

-- Lift the pause and clear the hold of the type's held messages; the caller sends them (the
-- sweeper does after its grace if the caller dies first). Returns whether it was paused and
-- how many job and task rows it released.
CREATE FUNCTION resume_job_type(p_job_type text, p_actor text)
RETURNS TABLE (resumed boolean, jobs integer, tasks integer)
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
#variable_conflict use_column
DECLARE
    v_pause job_type_pauses%ROWTYPE;
    v_resumed boolean;
    v_jobs integer;
    v_tasks integer;
BEGIN
    -- Deleting waits for any hold that holds the pause row FOR SHARE, so a row held at the
    -- same moment is seen (and released) by the updates below.
    DELETE FROM job_type_pauses p WHERE p.job_type = p_job_type RETURNING * INTO v_pause;
    v_resumed := FOUND;
    UPDATE jobs j SET dispatched_at = NULL, updated_at = now()
     WHERE j.job_type = p_job_type AND j.dispatched_at = pause_hold();
    GET DIAGNOSTICS v_jobs = ROW_COUNT;
    -- In task_id order, as claim_tasks locks them.
    WITH held AS (
        SELECT t.task_id FROM tasks t JOIN jobs j ON j.job_id = t.job_id
         WHERE j.job_type = p_job_type AND t.status IN ('queued', 'retrying')
           AND t.dispatched_at = pause_hold()
         ORDER BY t.task_id
           FOR NO KEY UPDATE OF t
    )
    UPDATE tasks t SET dispatched_at = NULL, updated_at = now()
      FROM held h WHERE t.task_id = h.task_id;
    GET DIAGNOSTICS v_tasks = ROW_COUNT;
    IF v_resumed THEN
        INSERT INTO job_events (job_id, stage, kind, actor, reason, detail)
        SELECT j.job_id, j.stage, 'operator', p_actor, format('job type %s resumed', p_job_type),
               jsonb_build_object('action', 'resume', 'job_type', p_job_type,
                                  'paused_by', v_pause.paused_by, 'paused_at', v_pause.paused_at)
          FROM jobs j WHERE j.job_type = p_job_type AND j.status IN ('queued', 'processing')
         ORDER BY j.job_id;
    END IF;
    RETURN QUERY SELECT v_resumed, v_jobs, v_tasks;
END $$;

-- A job message of a paused type: hold the stage start (no new stage starts while paused).
-- Returns whether the type is paused; the caller then drops the message.
CREATE FUNCTION hold_job_if_paused(p_job_id text, p_stage integer)
RETURNS boolean
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
#variable_conflict use_column
DECLARE
    v_pause job_type_pauses%ROWTYPE;
BEGIN
    SELECT p.* INTO v_pause FROM job_type_pauses p JOIN jobs j ON j.job_type = p.job_type
     WHERE j.job_id = p_job_id FOR SHARE OF p;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    UPDATE jobs j SET dispatched_at = pause_hold(), updated_at = now()
     WHERE j.job_id = p_job_id AND j.stage = p_stage AND j.status IN ('queued', 'processing')
       AND j.dispatched_at IS DISTINCT FROM pause_hold();
    IF FOUND THEN
        INSERT INTO job_events (job_id, stage, kind, actor, reason, detail)
        VALUES (p_job_id, p_stage, 'operator', v_pause.paused_by,
                format('stage %s held: job type %s is paused', p_stage, v_pause.job_type),
                jsonb_build_object('action', 'hold', 'job_type', v_pause.job_type));
    END IF;
    RETURN true;
END $$;

-- A task message of a paused type: hold its unclaimed tasks without using an attempt.
-- Returns whether the type is paused; the caller then claims nothing and drops the message.
CREATE FUNCTION hold_tasks_if_paused(p_job_id text, p_task_ids text[])
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
               AND u.status IN ('queued', 'retrying')
             ORDER BY u.task_id FOR NO KEY UPDATE SKIP LOCKED) held
     WHERE t.task_id = held.task_id;
    RETURN true;
END $$;

-- A running attempt reports how far it is; a stale attempt (fencing token) changes nothing.
CREATE FUNCTION report_task_progress(
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
     WHERE t.task_id = p_task_id AND t.status = 'processing' AND t.attempt = p_attempt;
    RETURN FOUND;
END $$;
