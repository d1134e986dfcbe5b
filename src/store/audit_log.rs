//! Hash-chained audit log file (owned elsewhere).
