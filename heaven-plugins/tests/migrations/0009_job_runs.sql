-- What the test worker's jobs did (jobs_worker.py): one row each time one starts, ends or fails.
CREATE TABLE job_runs (
    job_id bigint NOT NULL,
    name text NOT NULL,
    attempt integer NOT NULL,
    what text NOT NULL,
    at timestamptz NOT NULL DEFAULT clock_timestamp()
);
