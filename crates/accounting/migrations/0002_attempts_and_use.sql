-- Version 2: what the processes used (CPU time for the batch step and for
-- each step, a step's peak memory), the derived exit code, why an attempt
-- ended, and one row per requeued attempt (`superseded` marks the earlier
-- ones; history shows only the last unless asked for all).

ALTER TABLE jobs ADD COLUMN derived_exit_code BIGINT;
ALTER TABLE jobs ADD COLUMN derived_exit_signal BIGINT;
ALTER TABLE jobs ADD COLUMN cpu_user_ms BIGINT;
ALTER TABLE jobs ADD COLUMN cpu_system_ms BIGINT;
ALTER TABLE jobs ADD COLUMN reason TEXT;
ALTER TABLE jobs ADD COLUMN superseded BIGINT NOT NULL DEFAULT 0;
ALTER TABLE steps ADD COLUMN max_rss_kb BIGINT;
ALTER TABLE steps ADD COLUMN cpu_user_ms BIGINT;
ALTER TABLE steps ADD COLUMN cpu_system_ms BIGINT;
