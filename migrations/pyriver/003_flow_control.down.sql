-- pyriver 003 (down): no rate limit state, no sequence index.

DROP INDEX pyriver_job_sequence_idx;
DROP TABLE pyriver_flow_state;
