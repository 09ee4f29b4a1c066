-- Drover's accounting schema, version 1. One SQL for SQLite and PostgreSQL:
-- BIGINT and TEXT only, times in epoch milliseconds.

CREATE TABLE jobs (
    job_id        BIGINT NOT NULL,
    attempt       BIGINT NOT NULL,
    display_id    TEXT   NOT NULL,
    array_job_id  BIGINT,
    array_task    BIGINT,
    name          TEXT   NOT NULL,
    user_name     TEXT   NOT NULL,
    uid           BIGINT NOT NULL,
    gid           BIGINT NOT NULL,
    account       TEXT,
    partition     TEXT   NOT NULL,
    submit_ms     BIGINT NOT NULL,
    eligible_ms   BIGINT NOT NULL,
    start_ms      BIGINT,
    end_ms        BIGINT,
    state         TEXT   NOT NULL,
    exit_code     BIGINT,
    exit_signal   BIGINT,
    nodes         TEXT   NOT NULL,
    num_nodes     BIGINT NOT NULL,
    alloc_cpus    BIGINT NOT NULL,
    alloc_mem_mb  BIGINT,
    alloc_gpus    BIGINT NOT NULL,
    time_limit_s  BIGINT,
    work_dir      TEXT   NOT NULL,
    max_rss_kb    BIGINT,
    restart_count BIGINT NOT NULL,
    PRIMARY KEY (job_id, attempt)
);
CREATE INDEX jobs_by_user_end ON jobs (user_name, end_ms);
CREATE INDEX jobs_by_end ON jobs (end_ms);
CREATE INDEX jobs_by_array ON jobs (array_job_id);

CREATE TABLE steps (
    job_id      BIGINT NOT NULL,
    attempt     BIGINT NOT NULL,
    step_id     BIGINT NOT NULL,
    name        TEXT   NOT NULL,
    nodes       TEXT   NOT NULL,
    num_nodes   BIGINT NOT NULL,
    ntasks      BIGINT NOT NULL,
    cpus        BIGINT NOT NULL,
    start_ms    BIGINT NOT NULL,
    end_ms      BIGINT,
    state       TEXT   NOT NULL,
    exit_code   BIGINT,
    exit_signal BIGINT,
    PRIMARY KEY (job_id, attempt, step_id)
);

CREATE TABLE events (
    time_ms BIGINT NOT NULL,
    kind    TEXT   NOT NULL,
    job_id  BIGINT,
    node    TEXT,
    text    TEXT   NOT NULL,
    PRIMARY KEY (time_ms, text)
);
CREATE INDEX events_by_time ON events (time_ms);
