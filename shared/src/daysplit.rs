//! Splitting a session into the parts that fall on each UTC day.
//!
//! The warehouse does this in SQL (`infra/sql/analytics_days.sql`); this is
//! the reference that SQL is held against: a property test of the local
//! runner (`tvetl`'s warehouse tests) loads random sessions, many of them
//! crossing a midnight, rebuilds their days' analytics and compares every
//! day's watch time and reach with the parts this function gives.

use crate::timestamp::MICROS_PER_DAY;

/// The parts of `[start, end)` per UTC day, as (day number, microseconds).
/// Empty when `end <= start`.
///
/// ```
/// use tvetl_core::daysplit::split_by_day;
/// use tvetl_core::timestamp::parse_timestamp;
/// let start = parse_timestamp("2024-01-01T23:00:00Z").unwrap();
/// let end = parse_timestamp("2024-01-02T00:30:00Z").unwrap();
/// let parts = split_by_day(start, end);
/// assert_eq!(parts.iter().map(|p| p.1).collect::<Vec<_>>(), [3_600_000_000, 1_800_000_000]);
/// ```
pub fn split_by_day(start: i64, end: i64) -> Vec<(i32, i64)> {
    let mut parts = Vec::new();
    let mut t = start;
    while t < end {
        let day = t.div_euclid(MICROS_PER_DAY);
        let next_midnight = (day + 1) * MICROS_PER_DAY;
        let part_end = end.min(next_midnight);
        parts.push((day as i32, part_end - t));
        t = part_end;
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn parts_add_up_to_the_duration(start in -2_000_000_000_000_000i64..4_000_000_000_000_000, len in 1i64..3 * MICROS_PER_DAY) {
            let parts = split_by_day(start, start + len);
            prop_assert_eq!(parts.iter().map(|p| p.1).sum::<i64>(), len);
            prop_assert!(parts.iter().all(|p| p.1 > 0 && p.1 <= MICROS_PER_DAY));
            for pair in parts.windows(2) {
                prop_assert_eq!(pair[1].0, pair[0].0 + 1);
            }
            prop_assert_eq!(parts[0].0 as i64, start.div_euclid(MICROS_PER_DAY));
        }

        #[test]
        fn sessions_of_at_most_a_day_touch_at_most_two_days(start in 0i64..4_000_000_000_000_000, len in 1i64..=MICROS_PER_DAY) {
            prop_assert!(split_by_day(start, start + len).len() <= 2);
        }
    }

    #[test]
    fn a_session_ending_at_midnight_stays_on_its_day() {
        assert_eq!(split_by_day(0, MICROS_PER_DAY), vec![(0, MICROS_PER_DAY)]);
        assert!(split_by_day(5, 5).is_empty());
    }
}
