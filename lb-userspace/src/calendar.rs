//! Seconds since the epoch as a UTC calendar date and time, for the texts that show one
//! (mail Date headers, keepalived's dump files), without a time-zone database: lbd writes
//! UTC.

/// A moment in UTC, broken down.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Utc {
    pub year: i64,
    /// 1..=12.
    pub month: u32,
    /// 1..=31.
    pub day: u32,
    pub hour: u64,
    pub minute: u64,
    pub second: u64,
    /// 0 is Sunday.
    pub weekday: u32,
}

pub const WEEKDAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
pub const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

impl Utc {
    pub fn from_unix(secs: u64) -> Self {
        let days = secs / 86_400;
        let (year, month, day) = civil_from_days(days as i64);
        let of_day = secs % 86_400;
        Self {
            year,
            month,
            day,
            hour: of_day / 3600,
            minute: of_day / 60 % 60,
            second: of_day % 60,
            // 1970-01-01 was a Thursday.
            weekday: ((days + 4) % 7) as u32,
        }
    }

    pub fn weekday_name(&self) -> &'static str {
        WEEKDAYS[self.weekday as usize]
    }

    pub fn month_name(&self) -> &'static str {
        MONTHS[(self.month - 1) as usize]
    }
}

/// The proleptic Gregorian date of a count of days since 1970-01-01 (Howard Hinnant's
/// algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * shifted_month + 2) / 5 + 1) as u32;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_days() {
        let epoch = Utc::from_unix(0);
        assert_eq!(
            (epoch.year, epoch.month, epoch.day, epoch.weekday_name()),
            (1970, 1, 1, "Thu")
        );
        // 2026-12-07 17:08:32, a Monday; 2024-02-29, a leap day (Thursday).
        let t = Utc::from_unix(1_796_663_312);
        assert_eq!(
            (
                t.year,
                t.month_name(),
                t.day,
                t.hour,
                t.minute,
                t.second,
                t.weekday_name()
            ),
            (2026, "Dec", 7, 17, 8, 32, "Mon")
        );
        let leap = Utc::from_unix(1_709_164_800);
        assert_eq!((leap.month, leap.day, leap.weekday_name()), (2, 29, "Thu"));
    }
}
