-- Issue 9: creating a stage's tasks checks that their stage exists once per statement,
-- not once per row.
--
-- The foreign key from tasks to job_stages ran one lookup of the stage row per inserted
-- task: 25 of the 82 ms that COPY of a 10,000-task stage took, on the path between one
-- stage's last task and the next stage's first (bench/PROFILE.md). The rows of one COPY
-- all name the same stage, so a statement-level trigger checks each distinct
-- (job_id, stage) of the statement once, and takes the same KEY SHARE lock on the
-- stage row that the foreign key took, so the stage cannot be deleted under them.
-- The cascade the key gave is not needed: purge_jobs deletes a job's tasks before its
-- job, and nothing else deletes stages.
ALTER TABLE tasks DROP CONSTRAINT tasks_job_id_stage_fkey;

CREATE FUNCTION tasks_have_their_stage() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    v_stage record;
BEGIN
    FOR v_stage IN SELECT DISTINCT n.job_id, n.stage FROM new_tasks n LOOP
        PERFORM 1 FROM job_stages s
         WHERE s.job_id = v_stage.job_id AND s.stage = v_stage.stage
           FOR KEY SHARE;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'tasks of job % name stage %, which does not exist',
                v_stage.job_id, v_stage.stage USING ERRCODE = 'foreign_key_violation';
        END IF;
    END LOOP;
    RETURN NULL;
END $$;

CREATE TRIGGER tasks_have_their_stage AFTER INSERT ON tasks
    REFERENCING NEW TABLE AS new_tasks
    FOR EACH STATEMENT EXECUTE FUNCTION tasks_have_their_stage();
