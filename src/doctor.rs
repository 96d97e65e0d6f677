//! Host limits and tuning checks (`sockstorm doctor`).
