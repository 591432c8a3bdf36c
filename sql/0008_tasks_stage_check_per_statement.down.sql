DROP TRIGGER tasks_have_their_stage ON tasks;
DROP FUNCTION tasks_have_their_stage();
ALTER TABLE tasks ADD FOREIGN KEY (job_id, stage)
    REFERENCES job_stages (job_id, stage) ON DELETE CASCADE;
