"""What the server tells its operators: metrics, log set-up, the audit trail, start-up phases."""
