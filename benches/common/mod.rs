//! What both benchmarks share: measuring a figure against its raw limit in
//! alternating slices of one window, so background load hits both sides.

use std::error::Error;
use std::time::Duration;

/// Errors end a benchmark run with a message.
pub type BenchResult<T> = Result<T, Box<dyn Error>>;

/// Runs one side of a comparison for the given time; returns the number of
/// operations completed within it. Every runner stops counting when the
/// span ends and is timed over the span alone. `spread` also lets its load
/// settle before the span starts; a comparison that uses it does so on
/// both sides.
pub type Runner<'a> = Box<dyn FnMut(Duration) -> BenchResult<u64> + 'a>;

/// Time counted for each comparison (figure and raw limit share it);
/// warm-up, settling and drains come on top.
pub const WINDOW: Duration = Duration::from_secs(9);
/// How many alternating slices a window is cut into (half for each side).
/// Short slices (150 ms a side) pair each side with the load the other just
/// saw: on a shared machine whose load swings within a second, half-second
/// slices let one side catch a quiet spell the other missed, and the ratio
/// then moved by ±0.15 from run to run.
pub const SLICES: u32 = 30;
/// Unmeasured warm-up before each comparison.
pub const WARMUP: Duration = Duration::from_millis(300);

/// Operations per second of each side of a comparison.
pub struct Rates {
    /// The figure measured.
    pub figure: f64,
    /// Its raw limit.
    pub raw: f64,
}

/// Runs `runner` for `span`; returns (operations completed within it,
/// its length in seconds).
pub fn timed(runner: &mut Runner<'_>, span: Duration) -> BenchResult<(u64, f64)> {
    let ops = runner(span)?;
    Ok((ops, span.as_secs_f64()))
}

/// Measures `figure` and `raw` in alternating slices of [`WINDOW`].
pub fn compare(mut figure: Runner<'_>, mut raw: Runner<'_>) -> BenchResult<Rates> {
    timed(&mut figure, WARMUP)?;
    timed(&mut raw, WARMUP)?;
    let half = WINDOW / SLICES / 2;
    let (mut fig, mut lim) = ((0, 0.0), (0, 0.0));
    let add = |sum: &mut (u64, f64), (ops, secs): (u64, f64)| {
        sum.0 += ops;
        sum.1 += secs;
    };
    for round in 0..SLICES {
        // Alternate which side goes first so neither always follows the other.
        if round % 2 == 0 {
            add(&mut fig, timed(&mut figure, half)?);
            add(&mut lim, timed(&mut raw, half)?);
        } else {
            add(&mut lim, timed(&mut raw, half)?);
            add(&mut fig, timed(&mut figure, half)?);
        }
    }
    Ok(Rates {
        figure: fig.0 as f64 / fig.1,
        raw: lim.0 as f64 / lim.1,
    })
}
