//! The record of revocations acted on (`acted.json` in the revocation
//! directory): the digests of the last messages and the newest
//! `event_time`, so that a replay, even after a restart, runs nothing.

use std::collections::VecDeque;
use std::path::Path;

use crate::secure_fs;

/// The record of what was acted on, in the revocation directory.
const ACTED_FILE: &str = "acted.json";
/// How many acted-on messages are remembered.
pub const REMEMBERED: usize = 256;
/// How much older than the newest acted on a notification may be and still
/// count (the verifier's clock is local time with one-second resolution:
/// a daylight-saving change or verifiers in other time zones must not
/// turn fresh notifications away). Recent replays are caught by digest.
pub const STALE_AFTER_SECS: i64 = 2 * 3600;

/// What was acted on, as kept in `acted.json`.
#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize)]
pub(super) struct Acted {
    /// Hex SHA-256 of the messages acted on, oldest first.
    digests: VecDeque<String>,
    /// The newest `event_time` acted on, in seconds from 1970 as the
    /// verifier's local clock read it.
    newest: Option<i64>,
}

impl Acted {
    /// The record in `state_dir`, read when the first notification comes
    /// (after the switch to `run_as`, whose directory it is).
    pub(super) fn load(state_dir: &Path) -> Self {
        let file = state_dir.join(ACTED_FILE);
        match secure_fs::read_private(&file) {
            Ok((bytes, _)) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                tracing::warn!(
                    "{}: unreadable ({e}); starting a new record of acted-on revocations",
                    file.display()
                );
                Self::default()
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Self::default(),
            Err(e) => {
                tracing::warn!("the record of acted-on revocations: {e}");
                Self::default()
            }
        }
    }

    /// Records `digest` (with `when`, its `event_time`) as acted on,
    /// unless it was already or is stale.
    pub(super) fn admit(&mut self, digest: String, when: Option<i64>) -> Seen {
        if self.digests.contains(&digest) {
            return Seen::Again;
        }
        if let (Some(when), Some(newest)) = (when, self.newest) {
            if when + STALE_AFTER_SECS < newest {
                return Seen::Stale;
            }
        }
        self.digests.push_back(digest);
        while self.digests.len() > REMEMBERED {
            self.digests.pop_front();
        }
        if when.is_some() && when > self.newest {
            self.newest = when;
        }
        Seen::First
    }

    /// Writes the record to `state_dir`, 0600.
    pub(super) fn save(&self, state_dir: &Path) -> std::io::Result<()> {
        let record = serde_json::to_vec(self).map_err(std::io::Error::other)?;
        secure_fs::write_private(&state_dir.join(ACTED_FILE), &record)
    }
}

/// Whether a verified message may be acted on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Seen {
    /// Never acted on: recorded now.
    First,
    /// Acted on already.
    Again,
    /// More than [`STALE_AFTER_SECS`] older than the newest acted on.
    Stale,
}

/// The verifier's `event_time` (`time.asctime()`: `Sun Nov 22 04:24:56
/// 2026`, the day padded with a space) in seconds from 1970 (its time zone
/// unknown: only differences between two of them mean anything).
pub(super) fn parse_event_time(text: &str) -> Option<i64> {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let mut parts = text.split_whitespace();
    let _weekday = parts.next()?;
    let month_name = parts.next()?;
    let month = u32::try_from(MONTHS.iter().position(|m| *m == month_name)?).ok()? + 1;
    let day: u32 = parts.next()?.parse().ok()?;
    let mut clock = parts.next()?.split(':').map(|p| p.parse::<u32>().ok());
    let (h, m, s) = (clock.next()??, clock.next()??, clock.next()??);
    let year: i64 = parts.next()?.parse().ok()?;
    if !(1..=31).contains(&day) || h > 23 || m > 59 || s > 60 {
        return None;
    }
    // Days from 1970-01-01 to the date (the proleptic Gregorian calendar).
    let (y, mo) = if month <= 2 {
        (year - 1, i64::from(month) + 9)
    } else {
        (year, i64::from(month) - 3)
    };
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400;
    let day_of_year = (153 * mo + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    let days = era * 146_097 + day_of_era - 719_468;
    Some(days * 86_400 + i64::from(h) * 3600 + i64::from(m) * 60 + i64::from(s))
}
