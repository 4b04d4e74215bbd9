//! Calibration of the data plane's clock. The XDP program times flows by the kernel's
//! jiffies, which it reads with a plain load instead of calling the coarse-clock helper,
//! and needs to know how they map onto `CLOCK_MONOTONIC` nanoseconds (the clock userspace
//! ages flows by): the length of a tick (1/HZ, which the kernel does not publish) and an
//! offset. `lb_clock` hands out samples of both clocks taken together; two of them a few
//! ticks apart give the tick, rounded to a rate the kernel is built with, and the offset.
//! Jiffies advance by whole ticks of monotonic time, so the two clocks never drift apart.

use std::time::{Duration, Instant};

use aya::{
    TestRun,
    programs::{ProgramError, TestRunOptions, Xdp},
};
use lb_common::ClockSample;

/// The tick rates (`CONFIG_HZ`) the kernel offers on any architecture.
const TICK_RATES: [u64; 15] = [
    24, 32, 48, 64, 100, 128, 200, 250, 256, 300, 500, 512, 1000, 1024, 1200,
];

/// How far a measured rate may be from one of `TICK_RATES`, in parts per thousand (NTP
/// slews the monotonic clock by at most 0.5 per thousand).
const RATE_TOLERANCE_PER_MILLE: u64 = 5;

/// How long calibration may take before the program is left on the coarse clock.
const CALIBRATION_LIMIT: Duration = Duration::from_millis(250);

/// The jiffies between two samples: enough that one tick's rounding cannot pass for
/// another rate.
const MIN_TICKS: u64 = 4;

/// jiffies × `tick_ns` + `offset_ns` (wrapping) = monotonic nanoseconds as of the tick.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JiffyClock {
    pub tick_ns: u64,
    pub offset_ns: u64,
}

/// Why the clock could not be calibrated (the program then reads the coarse clock).
#[derive(Debug, thiserror::Error)]
pub enum ClockError {
    #[error("running lb_clock: {source}")]
    Run { source: ProgramError },
    #[error("lb_clock returned {bytes} bytes, fewer than a sample")]
    Short { bytes: usize },
    #[error("no two samples of jiffies and the coarse clock {MIN_TICKS} ticks apart agreed on a tick rate within {} ms", CALIBRATION_LIMIT.as_millis())]
    NoAgreement,
}

/// Calibrate from samples of the loaded `lb_clock` program, sleeping between them (a few
/// ticks: 4 to 200 ms, by the kernel's rate).
pub fn calibrate(program: &Xdp) -> Result<JiffyClock, ClockError> {
    let started = Instant::now();
    let mut first: Option<ClockSample> = None;
    while started.elapsed() < CALIBRATION_LIMIT {
        let sample = sample(program)?;
        if sample.coarse_before_ns != sample.coarse_after_ns {
            // A tick came in between: which clock it moved first is unknown.
            continue;
        }
        match first {
            None => first = Some(sample),
            Some(earlier) if sample.jiffies.wrapping_sub(earlier.jiffies) >= MIN_TICKS => {
                if let Some(clock) = from_samples(&earlier, &sample) {
                    return Ok(clock);
                }
                first = Some(sample);
            }
            Some(_) => {}
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    Err(ClockError::NoAgreement)
}

/// One sample of `lb_clock`.
fn sample(program: &Xdp) -> Result<ClockSample, ClockError> {
    // Long enough for an Ethernet header, which the kernel requires of an XDP test frame.
    let frame = [0u8; 64];
    let mut output = [0u8; 64];
    let result = program
        .test_run(TestRunOptions {
            data_in: Some(&frame),
            data_out: Some(&mut output),
            ..TestRunOptions::default()
        })
        .map_err(|source| ClockError::Run { source })?;
    let bytes = (result.data_size_out as usize).min(output.len());
    output
        .get(..size_of::<ClockSample>())
        .filter(|_| bytes >= size_of::<ClockSample>())
        .map(bytemuck::pod_read_unaligned)
        .ok_or(ClockError::Short { bytes })
}

/// The clock two samples agree on: the tick their distance gives, rounded to a rate of
/// `TICK_RATES`, and the offset of the later one; `None` when the measured rate is no
/// such rate or the two offsets differ by half a tick or more.
pub fn from_samples(earlier: &ClockSample, later: &ClockSample) -> Option<JiffyClock> {
    let ticks = later
        .jiffies
        .checked_sub(earlier.jiffies)
        .filter(|&t| t > 0)?;
    let elapsed_ns = later
        .coarse_before_ns
        .checked_sub(earlier.coarse_before_ns)?;
    if elapsed_ns == 0 {
        return None;
    }
    // Rate in thousandths of a hertz: ticks / seconds.
    let measured_milli_hz = u128::from(ticks) * 1_000_000_000_000 / u128::from(elapsed_ns);
    let rate = TICK_RATES.into_iter().find(|&rate| {
        let nominal = u128::from(rate) * 1000;
        nominal.abs_diff(measured_milli_hz) * 1000 <= nominal * u128::from(RATE_TOLERANCE_PER_MILLE)
    })?;
    // The kernel's TICK_NSEC: a tick's nanoseconds, rounded.
    let tick_ns = (1_000_000_000 + rate / 2) / rate;
    let offset_of = |s: &ClockSample| {
        s.coarse_before_ns
            .wrapping_sub(s.jiffies.wrapping_mul(tick_ns))
    };
    let drift = offset_of(later).wrapping_sub(offset_of(earlier)) as i64;
    (drift.unsigned_abs() < tick_ns / 2).then(|| JiffyClock {
        tick_ns,
        offset_ns: offset_of(later),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(jiffies: u64, coarse_ns: u64) -> ClockSample {
        ClockSample {
            coarse_before_ns: coarse_ns,
            jiffies,
            coarse_after_ns: coarse_ns,
        }
    }

    /// The monotonic nanoseconds of `jiffies`, as the program computes them.
    fn nanoseconds(clock: &JiffyClock, jiffies: u64) -> u64 {
        jiffies
            .wrapping_mul(clock.tick_ns)
            .wrapping_add(clock.offset_ns)
    }

    /// Jiffies start 300 s before wrapping 32 bits, as the kernel starts them.
    const BOOT_JIFFIES_250: u64 = (1 << 32) - 300 * 250;

    #[test]
    fn two_samples_give_the_tick_and_the_offset() {
        let earlier = sample(BOOT_JIFFIES_250 + 1000, 4_000_000_000 + 1234);
        let later = sample(BOOT_JIFFIES_250 + 1005, 4_020_000_000 + 1234);
        let clock = from_samples(&earlier, &later).expect("250 Hz");
        assert_eq!(clock.tick_ns, 4_000_000);
        assert_eq!(
            nanoseconds(&clock, BOOT_JIFFIES_250 + 1005),
            4_020_000_000 + 1234
        );
        assert_eq!(
            nanoseconds(&clock, BOOT_JIFFIES_250 + 2005),
            8_020_000_000 + 1234
        );
    }

    #[test]
    fn a_slewed_clock_rounds_to_the_kernels_rate() {
        // 300 Hz (a tick of 3,333,333 ns), the monotonic clock 0.3 per thousand fast.
        let earlier = sample(10_000, 50_000_000_000);
        let later = sample(10_004, 50_000_000_000 + 13_337_333);
        assert_eq!(
            from_samples(&earlier, &later).map(|c| c.tick_ns),
            Some(3_333_333)
        );
        // 1000 Hz against 1024 Hz.
        let later = sample(10_010, 50_000_000_000 + 10_000_000);
        assert_eq!(
            from_samples(&earlier, &later).map(|c| c.tick_ns),
            Some(1_000_000)
        );
        let later = sample(10_010, 50_000_000_000 + 9_765_625);
        assert_eq!(
            from_samples(&earlier, &later).map(|c| c.tick_ns),
            Some(976_563)
        );
    }

    #[test]
    fn samples_that_agree_on_no_rate_give_no_clock() {
        let earlier = sample(10_000, 50_000_000_000);
        // 4 ticks in 13 ms: 307.7 Hz, no kernel's rate.
        assert_eq!(
            from_samples(&earlier, &sample(10_004, 50_013_000_000)),
            None
        );
        // Time that stood still, or ran backwards.
        assert_eq!(
            from_samples(&earlier, &sample(10_004, 50_000_000_000)),
            None
        );
        assert_eq!(
            from_samples(&earlier, &sample(10_004, 40_000_000_000)),
            None
        );
        assert_eq!(
            from_samples(&earlier, &sample(10_000, 50_016_000_000)),
            None
        );
    }
}
