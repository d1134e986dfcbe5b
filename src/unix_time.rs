//! Unix-time arithmetic for the core: converting a `SystemTime` that was
//! passed in to whole seconds since the epoch. Reading the clock is the
//! edge's job (`clock`); this module only converts.

use std::time::SystemTime;

/// Seconds since the Unix epoch for `t`, saturating at zero for times before it.
pub fn seconds(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn before_the_epoch_saturates_at_zero() {
        assert_eq!(
            seconds(SystemTime::UNIX_EPOCH + Duration::from_millis(1500)),
            1
        );
        assert_eq!(seconds(SystemTime::UNIX_EPOCH - Duration::from_secs(5)), 0);
    }
}
