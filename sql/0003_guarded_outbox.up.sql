-- The outbox and the janitor made safe against their own failures: every state change the
-- repositories made with inline SQL is a procedure here, with its guard; a dispatch holds a
-- lease the sweeper respects; a retry is claimed only once its backoff is over; lost
-- messages are reopened a bounded number at a time, and only those provably not queued.

-- Who is sending a stage's task messages, and until when that holds without a renewal.
ALTER TABLE job_stages ADD COLUMN dispatch_holder text;
ALTER TABLE job_stages ADD COLUMN dispatch_lease_until timestamptz;

-- As in 0001, and a retrying task is claimable only once its next_attempt_at has come: an
-- early or duplicate delivery must not run a retry before its backoff (nor use an attempt).
CREATE OR REPLACE FUNCTION claim_tasks(p_task_ids text[], p_worker text)
RETURNS SETOF tasks
LANGUAGE sql SET search_path FROM CURRENT AS $$
    WITH claimable AS (
        SELECT t.task_id FROM tasks t
         WHERE t.task_id = ANY (p_task_ids)
           AND t.status IN ('queued', 'retrying')
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
     WHERE t.task_id = c.task_id AND t.status IN ('queued', 'retrying')
    RETURNING t.*;
$$;

-- The tasks a message named that wait for their backoff: the worker sends them again with
-- the delay left, instead of claiming them early.
CREATE FUNCTION deferred_tasks(p_task_ids text[])
RETURNS TABLE (task_id text, delay_s double precision)
LANGUAGE sql STABLE SET search_path FROM CURRENT AS $$
    SELECT t.task_id, extract(epoch FROM t.next_attempt_at - now())::float8
      FROM tasks t
     WHERE t.task_id = ANY (p_task_ids) AND t.status IN ('queued', 'retrying')
       AND t.next_attempt_at > now()
     ORDER BY t.task_id;
$$;

-- The outbox marker of task messages: set once the send is confirmed. A locked task is
-- being claimed and needs no mark; skipping it keeps this from waiting on (and
-- deadlocking with) the workers already running it.
CREATE FUNCTION mark_tasks_dispatched(p_task_ids text[])
RETURNS integer
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    v_count integer;
BEGIN
    UPDATE tasks t SET dispatched_at = now()
      FROM (SELECT u.task_id FROM tasks u
             WHERE u.task_id = ANY (p_task_ids) AND u.dispatched_at IS NULL
               AND u.status IN ('queued', 'retrying')
             ORDER BY u.task_id FOR NO KEY UPDATE SKIP LOCKED) unsent
     WHERE t.task_id = unsent.task_id;
    GET DIAGNOSTICS v_count = ROW_COUNT;
    RETURN v_count;
END $$;

-- The outbox marker of a job message, while the job is unfinished and still at that stage.
CREATE FUNCTION mark_job_dispatched(p_job_id text, p_stage integer)
RETURNS boolean
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    UPDATE jobs j SET dispatched_at = now()
     WHERE j.job_id = p_job_id AND j.stage = p_stage AND j.status IN ('queued', 'processing');
    RETURN FOUND;
END $$;

-- Refresh the lease of running tasks this worker holds; returns how many it holds.
-- SKIP LOCKED: a task locked right now is being finished, and waiting for it could
-- deadlock with the group commit that holds it.
CREATE FUNCTION heartbeat_tasks(p_task_ids text[], p_worker text)
RETURNS integer
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    v_count integer;
BEGIN
    UPDATE tasks t SET heartbeat_at = now()
      FROM (SELECT a.task_id FROM tasks a
             WHERE a.task_id = ANY (p_task_ids) AND a.status = 'processing'
               AND a.claimed_by = p_worker
             ORDER BY a.task_id FOR NO KEY UPDATE SKIP LOCKED) alive
     WHERE t.task_id = alive.task_id;
    GET DIAGNOSTICS v_count = ROW_COUNT;
    RETURN v_count;
END $$;

-- Take (or renew) the lease on sending a processing stage's task messages. Another holder's
-- live lease refuses it; an expired one (its dispatcher stopped) is taken over.
CREATE FUNCTION take_dispatch_lease(p_job_id text, p_stage integer, p_holder text, p_lease interval)
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

CREATE FUNCTION release_dispatch_lease(p_job_id text, p_stage integer, p_holder text)
RETURNS boolean
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    UPDATE job_stages s SET dispatch_holder = NULL, dispatch_lease_until = NULL
     WHERE s.job_id = p_job_id AND s.stage = p_stage AND s.dispatch_holder = p_holder;
    RETURN FOUND;
END $$;

-- The sweeper's share of unsent task messages: tasks of stages no live dispatcher holds,
-- whose lease it takes for p_holder. Nothing is marked sent: the sweeper marks what it
-- sent, as the dispatcher does, so a failed send strands nothing.
CREATE FUNCTION sweep_unsent_tasks(p_grace interval, p_limit integer, p_holder text, p_lease interval)
RETURNS TABLE (task_id text, job_id text, stage integer, delay_s double precision)
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    WITH due AS (
        SELECT t.task_id, t.job_id, t.stage, t.next_attempt_at FROM tasks t
          JOIN jobs j ON j.job_id = t.job_id
          JOIN job_stages s ON s.job_id = t.job_id AND s.stage = t.stage
         WHERE t.dispatched_at IS NULL AND t.status IN ('queued', 'retrying')
           AND t.updated_at < now() - p_grace AND j.status = 'processing'
           AND (s.dispatch_holder IS NULL OR s.dispatch_holder = p_holder
                OR s.dispatch_lease_until < now())
         ORDER BY t.updated_at
         LIMIT p_limit
    ), leased AS (
        UPDATE job_stages s
           SET dispatch_holder = p_holder, dispatch_lease_until = now() + p_lease
          FROM (SELECT DISTINCT d.job_id, d.stage FROM due d) ds
         WHERE s.job_id = ds.job_id AND s.stage = ds.stage AND s.status = 'processing'
           AND (s.dispatch_holder IS NULL OR s.dispatch_holder = p_holder
                OR s.dispatch_lease_until < now())
        RETURNING s.job_id, s.stage
    ), logged AS (
        -- One repair event per stage and sweep, with how many of its tasks were unsent.
        INSERT INTO job_events (job_id, stage, kind, actor, reason, detail)
        SELECT d.job_id, d.stage, 'repair', 'janitor',
               'task message never sent: the sweeper sends it', jsonb_build_object('tasks', count(*))
          FROM due d JOIN leased l ON l.job_id = d.job_id AND l.stage = d.stage
         GROUP BY d.job_id, d.stage
    )
    SELECT d.task_id, d.job_id, d.stage,
           greatest(0, extract(epoch FROM coalesce(d.next_attempt_at, now()) - now()))::float8
      FROM due d JOIN leased l ON l.job_id = d.job_id AND l.stage = d.stage
     ORDER BY d.job_id, d.stage, d.task_id;
END $$;

-- The same for job messages. Each returned job's updated_at moves to now, so a janitor on
-- another host leaves it for p_grace; it is marked sent only once its send is confirmed.
CREATE FUNCTION sweep_unsent_jobs(p_grace interval, p_limit integer)
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

-- Messages sent but lost (with a storage account's data, or left in a poison queue): forget
-- that they were sent, so the sweeper sends them again. Only those provably not queued:
-- visible for longer than p_idle and sent before p_sent_before, the insertion time of the
-- oldest message still visible in their queue (the caller reads it; now() when the queue
-- is empty). At most p_limit tasks, p_per_stage of any one stage, per call.
CREATE FUNCTION reopen_lost_messages(
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
          FROM lost WHERE t.task_id = lost.task_id AND t.status IN ('queued', 'retrying')
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

-- A janitor repair that changed no row by itself (a stalled stage it moved on).
CREATE FUNCTION record_repair(p_job_id text, p_stage integer, p_reason text)
RETURNS void
LANGUAGE sql SET search_path FROM CURRENT AS $$
    INSERT INTO job_events (job_id, stage, kind, actor, reason)
    VALUES (p_job_id, p_stage, 'repair', 'janitor', p_reason);
$$;

-- Record a poison message once; false when it was recorded already.
CREATE FUNCTION record_poison(
    p_queue_name text, p_message_id text, p_body text, p_dequeue_count integer, p_reason text,
    p_job_id text, p_task_ids text[]
) RETURNS boolean
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    INSERT INTO poison_messages (queue_name, message_id, body, dequeue_count, reason, job_id, task_ids)
    VALUES (p_queue_name, p_message_id, p_body, p_dequeue_count, p_reason, p_job_id, p_task_ids)
    ON CONFLICT (queue_name, message_id) DO NOTHING;
    RETURN FOUND;
END $$;

-- Claim the replay of a poison message: once, unless p_force. Returns whether this call
-- may replay it, when it was replayed (now, or the earlier replay that refuses it), and
-- the replay before this one (for release_poison_replay when the send fails).
CREATE FUNCTION claim_poison_replay(p_poison_id bigint, p_force boolean)
RETURNS TABLE (replayed boolean, replayed_at timestamptz, previous_at timestamptz)
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
#variable_conflict use_column
DECLARE
    v_at timestamptz;
BEGIN
    SELECT p.replayed_at INTO v_at FROM poison_messages p WHERE p.poison_id = p_poison_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'claim_poison_replay: poison record % does not exist', p_poison_id
            USING ERRCODE = 'no_data_found';
    END IF;
    IF v_at IS NOT NULL AND NOT p_force THEN
        RETURN QUERY SELECT false, v_at, v_at;
        RETURN;
    END IF;
    UPDATE poison_messages p SET replayed_at = now() WHERE p.poison_id = p_poison_id;
    RETURN QUERY SELECT true, now(), v_at;
END $$;

-- Undo a replay claim whose send failed, so the operator may replay it again.
CREATE FUNCTION release_poison_replay(p_poison_id bigint, p_previous timestamptz)
RETURNS void
LANGUAGE sql SET search_path FROM CURRENT AS $$
    UPDATE poison_messages p SET replayed_at = p_previous WHERE p.poison_id = p_poison_id;
$$;

DROP FUNCTION reopen_idle_messages(interval);
DROP FUNCTION claim_unsent_jobs(interval, integer);
DROP FUNCTION claim_unsent_tasks(interval, integer);
