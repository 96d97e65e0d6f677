//! Human summary table and JSON results.
