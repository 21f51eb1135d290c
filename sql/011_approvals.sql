-- A person's answer to a run the quality gate stopped (the approve-run flow, in the Prefect UI):
-- approved (the run was made current through the promote path, recorded in current_run_log too),
-- rejected, or no answer within the time asked. The note is the person's own words.
CREATE TABLE segmentation.approvals (
    approval_id   bigserial PRIMARY KEY,
    run_id        bigint NOT NULL REFERENCES segmentation.runs (run_id),
    flow_run_id   text,
    decided_at    timestamptz NOT NULL DEFAULT now(),
    decision      text NOT NULL CHECK (decision IN ('approved', 'rejected', 'no answer')),
    note          text NOT NULL DEFAULT ''
);
CREATE INDEX approvals_run_id ON segmentation.approvals (run_id);
