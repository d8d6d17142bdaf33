//! Times in request bodies. RFC 3339 is the format (`2026-12-03T00:00:00Z`);
//! a date and time without a zone (`2026-12-03 00:00:00`, the MySQL-style
//! DATETIME that shop seeds and exports carry, or with a `T`) is accepted too
//! and read as UTC, which is what the server keeps every time in.

use chrono::{DateTime, NaiveDateTime, Utc};
use serde::Deserializer;
use serde::de::{Error, Visitor};
use std::fmt;

/// Zone-less layouts read as UTC; `%.f` also matches no fraction.
const NAIVE_LAYOUTS: [&str; 2] = ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"];

/// What a time field expects, for error messages.
pub const EXPECTED: &str =
    "an RFC 3339 date-time such as `2026-12-03T00:00:00Z`, or `YYYY-MM-DD HH:MM:SS` read as UTC";

/// Parse a time as [`EXPECTED`] describes.
pub fn parse(text: &str) -> Option<DateTime<Utc>> {
    let text = text.trim();
    if let Ok(time) = DateTime::parse_from_rfc3339(text) {
        return Some(time.with_timezone(&Utc));
    }
    NAIVE_LAYOUTS
        .iter()
        .find_map(|layout| NaiveDateTime::parse_from_str(text, layout).ok())
        .map(|naive| naive.and_utc())
}

/// For `#[serde(default, deserialize_with = "timestamp::optional")]`: null or
/// absent is `None`; a string that is not a time is refused naming [`EXPECTED`].
pub fn optional<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<DateTime<Utc>>, D::Error> {
    deserializer.deserialize_option(OptionalTime)
}

struct OptionalTime;

impl<'de> Visitor<'de> for OptionalTime {
    type Value = Option<DateTime<Utc>>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{EXPECTED}, or null")
    }

    fn visit_none<E: Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E: Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(Time).map(Some)
    }
}

struct Time;

impl Visitor<'_> for Time {
    type Value = DateTime<Utc>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(EXPECTED)
    }

    fn visit_str<E: Error>(self, text: &str) -> Result<Self::Value, E> {
        parse(text).ok_or_else(|| E::custom(format!("`{text}` is not a time: expected {EXPECTED}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_and_zone_less_times_are_read_as_utc() {
        let midnight = "2026-12-03T00:00:00Z".parse::<DateTime<Utc>>().unwrap();
        for text in [
            "2026-12-03T00:00:00Z",
            "2026-12-03T01:00:00+01:00",
            "2026-12-03 00:00:00",
            "2026-12-03T00:00:00",
            "2026-12-03 00:00:00.000",
        ] {
            assert_eq!(parse(text), Some(midnight), "{text}");
        }
        for text in [
            "",
            "tomorrow",
            "2026-12-03",
            "2026-13-03 00:00:00",
            "03/12/2026 00:00",
        ] {
            assert_eq!(parse(text), None, "{text}");
        }
    }
}
