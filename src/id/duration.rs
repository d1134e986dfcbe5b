//! Durations as users write them: `30s`, `15m`, `1h`, `7d`.

use std::fmt;
use std::time::Duration;

/// The longest duration accepted anywhere (ten years); beyond it timestamps
/// stop being meaningful for short-lived credentials.
const MAX_SECS: u64 = 10 * 365 * 24 * 3600;

/// Why a duration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// The text is not a number followed by one of `s`, `m`, `h`, `d`.
    #[error(
        "duration {0:?} must be a whole number followed by s, m, h or d (e.g. 30s, 15m, 1h, 7d)"
    )]
    Malformed(String),
    /// The duration is zero or negative.
    #[error("duration must be positive")]
    NotPositive,
    /// The duration is longer than ten years.
    #[error("duration is longer than ten years")]
    TooLong,
}

/// A positive duration of whole seconds, at most ten years.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ttl(u64);

impl Ttl {
    /// Parses `30s`, `15m`, `1h` or `7d`.
    pub fn parse(input: &str) -> Result<Self, DurationError> {
        let text = input.trim();
        if text.starts_with('-') {
            return Err(DurationError::NotPositive);
        }
        let split = text.len().saturating_sub(1);
        let (num, unit) = (text.get(..split), text.get(split..));
        let (Some(num), Some(unit)) = (num, unit) else {
            return Err(DurationError::Malformed(input.to_owned()));
        };
        let scale: u64 = match unit {
            "s" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => 86_400,
            _ => return Err(DurationError::Malformed(input.to_owned())),
        };
        if num.is_empty() || !num.bytes().all(|b| b.is_ascii_digit()) {
            return Err(DurationError::Malformed(input.to_owned()));
        }
        let n: u64 = num.parse().map_err(|_| DurationError::TooLong)?;
        Self::from_secs(n.checked_mul(scale).ok_or(DurationError::TooLong)?)
    }

    /// A duration of `secs` seconds.
    pub fn from_secs(secs: u64) -> Result<Self, DurationError> {
        match secs {
            0 => Err(DurationError::NotPositive),
            s if s > MAX_SECS => Err(DurationError::TooLong),
            s => Ok(Self(s)),
        }
    }

    /// A duration from a signed wire value (proto `int64` seconds).
    pub fn from_wire(secs: i64) -> Result<Self, DurationError> {
        if secs <= 0 {
            return Err(DurationError::NotPositive);
        }
        Self::from_secs(secs.unsigned_abs())
    }

    /// Whole seconds.
    pub fn as_secs(self) -> u64 {
        self.0
    }

    /// As a `std::time::Duration`.
    pub fn as_duration(self) -> Duration {
        Duration::from_secs(self.0)
    }
}

impl fmt::Display for Ttl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0;
        if s.is_multiple_of(86_400) {
            write!(f, "{}d", s / 86_400)
        } else if s.is_multiple_of(3600) {
            write!(f, "{}h", s / 3600)
        } else if s.is_multiple_of(60) {
            write!(f, "{}m", s / 60)
        } else {
            write!(f, "{s}s")
        }
    }
}

impl fmt::Debug for Ttl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Ttl({self})")
    }
}

impl std::str::FromStr for Ttl {
    type Err = DurationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_units() {
        assert_eq!(Ttl::parse("30s").unwrap().as_secs(), 30);
        assert_eq!(Ttl::parse("15m").unwrap().as_secs(), 900);
        assert_eq!(Ttl::parse("1h").unwrap().as_secs(), 3600);
        assert_eq!(Ttl::parse("7d").unwrap().as_secs(), 604_800);
    }

    #[test]
    fn rejects_each_broken_rule() {
        assert_eq!(Ttl::parse("0s"), Err(DurationError::NotPositive));
        assert_eq!(Ttl::parse("-5m"), Err(DurationError::NotPositive));
        assert_eq!(Ttl::parse("5"), Err(DurationError::Malformed("5".into())));
        assert_eq!(Ttl::parse("h"), Err(DurationError::Malformed("h".into())));
        assert_eq!(
            Ttl::parse("1.5h"),
            Err(DurationError::Malformed("1.5h".into()))
        );
        assert_eq!(Ttl::parse("5w"), Err(DurationError::Malformed("5w".into())));
        assert_eq!(Ttl::parse(""), Err(DurationError::Malformed(String::new())));
        assert_eq!(Ttl::parse("99999d"), Err(DurationError::TooLong));
        assert_eq!(
            Ttl::parse("99999999999999999999999d"),
            Err(DurationError::TooLong)
        );
        assert_eq!(Ttl::from_wire(-1), Err(DurationError::NotPositive));
        assert_eq!(Ttl::from_wire(0), Err(DurationError::NotPositive));
    }

    proptest! {
        #[test]
        fn display_round_trips(secs in 1u64..MAX_SECS) {
            let t = Ttl::from_secs(secs).unwrap();
            prop_assert_eq!(Ttl::parse(&t.to_string()).unwrap(), t);
        }

        #[test]
        fn never_panics(s in ".{0,40}") {
            let _ = Ttl::parse(&s);
        }
    }
}
