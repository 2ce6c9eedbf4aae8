//! A task's schedule, in the dialect of Celery's `celery.schedules.crontab`.
//!
//! The service never runs a schedule itself: it hands it to the Django side in `/discovery`, which
//! builds `crontab(**entry["crontab"])` from it. So a schedule is valid exactly when Celery's own
//! parser (`crontab_parser`) accepts every field, and that parser is what this module follows:
//! comma-separated parts, each `*`, `*/step`, `n`, `a-b` or `a-b/step`, where a range may wrap
//! around (`22-2` is 22, 23, 0, 1, 2), and weekday names (`mon`, `Monday`) in `day_of_week`.
//! The cron crates on crates.io parse the Vixie or Quartz dialects instead (`L`, `W`, `#`, `?`,
//! month names, 7 for Sunday, no wrapping ranges), which would let through strings that Celery
//! rejects and refuse some that it takes, so none of them is used here.

use std::fmt;

use chrono::{DateTime, Datelike, Local, TimeDelta, TimeZone, Timelike};

/// The five fields of a schedule, with the names of `crontab`'s keyword arguments.
pub const FIELDS: [Field; 5] = [
    Field::new("minute", 0, 59),
    Field::new("hour", 0, 23),
    Field::new("day_of_week", 0, 6),
    Field::new("day_of_month", 1, 31),
    Field::new("month_of_year", 1, 12),
];

/// One field of a schedule and the values it takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field {
    /// The keyword argument of `crontab`.
    pub name: &'static str,
    min: u32,
    max: u32,
}

impl Field {
    const fn new(name: &'static str, min: u32, max: u32) -> Self {
        Self { name, min, max }
    }

    /// Checks one field's text; `Err` says what is wrong, for an operator.
    fn check(self, spec: &str) -> Result<(), String> {
        if spec.is_empty() {
            return Err("is empty".into());
        }
        for part in spec.split(',') {
            self.check_part(part).map_err(|e| {
                if part == spec {
                    format!("`{spec}`: {e}")
                } else {
                    format!("`{spec}`, part `{part}`: {e}")
                }
            })?;
        }
        Ok(())
    }

    fn check_part(self, part: &str) -> Result<(), String> {
        let (range, step) = match part.split_once('/') {
            Some((range, step)) => (range, Some(step)),
            None => (part, None),
        };
        if let Some(step) = step {
            match step.parse::<u32>() {
                Ok(n) if n >= 1 && step.bytes().all(|b| b.is_ascii_digit()) => {}
                _ => return Err(format!("step `{step}` is not a whole number of at least 1")),
            }
        }
        if range == "*" {
            return Ok(());
        }
        match range.split_once('-') {
            Some((from, to)) => {
                self.value(from)?;
                self.value(to)?;
            }
            // Celery reads `5/10` as the number `5/10`, not as a step from 5.
            None if step.is_some() => {
                return Err("a step after a single value: write `a-b/step` or `*/step`".into())
            }
            None => {
                self.value(range)?;
            }
        }
        Ok(())
    }

    /// One value: a number in range, or in `day_of_week` a weekday's name.
    fn value(self, text: &str) -> Result<u32, String> {
        let n = if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
            text.parse::<u32>().unwrap_or(u32::MAX)
        } else if self.name == "day_of_week" {
            weekday(text).ok_or_else(|| {
                format!("`{text}` is neither a number from 0 to 6 nor a weekday name")
            })?
        } else {
            return Err(format!(
                "`{text}` is not a number from {} to {}",
                self.min, self.max
            ));
        };
        if n < self.min || n > self.max {
            return Err(format!(
                "{text} is out of range ({} takes {} to {})",
                self.name, self.min, self.max
            ));
        }
        Ok(n)
    }
}

impl Field {
    /// Every value the (valid) text `spec` takes, as bits of a set. A range may wrap around
    /// (`22-2`), as in Celery.
    fn values(self, spec: &str) -> u64 {
        let count = self.max - self.min + 1;
        let mut set = 0u64;
        for part in spec.split(',') {
            let (range, step) = match part.split_once('/') {
                Some((range, step)) => (range, step.parse::<u32>().unwrap_or(1).max(1)),
                None => (part, 1),
            };
            let (from, to) = match range.split_once('-') {
                _ if range == "*" => (self.min, self.max),
                Some((a, b)) => (
                    self.value(a).unwrap_or(self.min),
                    self.value(b).unwrap_or(self.max),
                ),
                None => {
                    let v = self.value(range).unwrap_or(self.min);
                    (v, v)
                }
            };
            let span = if to >= from {
                to - from
            } else {
                count - (from - to)
            };
            for k in (0..=span).step_by(step as usize) {
                set |= 1 << (self.min + (from - self.min + k) % count);
            }
        }
        set
    }
}

/// Celery's weekday names: Sunday is 0, and a name is known by its first three letters.
fn weekday(name: &str) -> Option<u32> {
    const DAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];
    const FULL: [&str; 7] = [
        "sunday",
        "monday",
        "tuesday",
        "wednesday",
        "thursday",
        "friday",
        "saturday",
    ];
    let lower = name.to_ascii_lowercase();
    let position = |names: &[&str; 7]| names.iter().position(|d| *d == lower);
    position(&DAYS)
        .or_else(|| position(&FULL))
        .and_then(|i| u32::try_from(i).ok())
}

/// A validated schedule: one text per field of [`FIELDS`], in that order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    values: [String; 5],
}

/// What is wrong with a schedule: the field (a key of `crontab`, or `None` for the whole
/// schedule) and the problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleError {
    /// The field at fault, e.g. `hour`.
    pub field: Option<&'static str>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ScheduleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.field {
            Some(field) => write!(f, "{field} {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl Schedule {
    /// Parses a five-field crontab line, `minute hour day_of_month month_of_year day_of_week`,
    /// the order of a crontab file (not the order of `crontab`'s arguments).
    pub fn from_line(line: &str) -> Result<Self, Vec<ScheduleError>> {
        let words: Vec<&str> = line.split_whitespace().collect();
        let [minute, hour, day_of_month, month_of_year, day_of_week] = words[..] else {
            return Err(vec![ScheduleError {
                field: None,
                message: format!(
                    "`{line}` has {} fields; a crontab line has five: minute hour \
                     day-of-month month day-of-week, e.g. \"*/5 2-4 * * 1-5\"",
                    words.len()
                ),
            }]);
        };
        Self::from_fields(|name| {
            Some(match name {
                "minute" => minute,
                "hour" => hour,
                "day_of_week" => day_of_week,
                "day_of_month" => day_of_month,
                _ => month_of_year,
            })
        })
    }

    /// Builds a schedule from `crontab`'s keyword arguments; a missing one is `*`.
    pub fn from_fields<'a>(
        get: impl Fn(&'static str) -> Option<&'a str>,
    ) -> Result<Self, Vec<ScheduleError>> {
        let mut errors = Vec::new();
        let values = FIELDS.map(|field| {
            let text = get(field.name).unwrap_or("*").trim().to_string();
            if let Err(message) = field.check(&text) {
                errors.push(ScheduleError {
                    field: Some(field.name),
                    message,
                });
            }
            text
        });
        if errors.is_empty() {
            Ok(Self { values })
        } else {
            Err(errors)
        }
    }

    /// Each field's name and text, in the order of [`FIELDS`].
    pub fn fields(&self) -> impl Iterator<Item = (&'static str, &str)> {
        FIELDS
            .iter()
            .zip(&self.values)
            .map(|(f, v)| (f.name, v.as_str()))
    }

    /// The text of the field named `name` (a key of `crontab`); `*` for an unknown name.
    pub fn get(&self, name: &str) -> &str {
        FIELDS
            .iter()
            .position(|f| f.name == name)
            .map_or("*", |i| self.values[i].as_str())
    }

    /// The first minute after `after` that the schedule fires at, looking up to four years
    /// ahead (`None`: never, such as the 31st of February). As in Celery, a day must match both
    /// `day_of_month` and `day_of_week`.
    pub fn next_after(&self, after: DateTime<Local>) -> Option<DateTime<Local>> {
        let [minute, hour, dow, dom, month] =
            std::array::from_fn(|i| FIELDS[i].values(&self.values[i]));
        let has = |set: u64, v: u32| set & (1 << v) != 0;
        let start = after.naive_local().with_second(0)?.with_nanosecond(0)? + TimeDelta::minutes(1);
        let mut day = start.date();
        for _ in 0..(4 * 366) {
            let fits = has(month, day.month())
                && has(dom, day.day())
                && has(dow, day.weekday().num_days_from_sunday());
            if fits {
                for (h, m) in (0..24u32).flat_map(|h| (0..60u32).map(move |m| (h, m))) {
                    if !has(hour, h) || !has(minute, m) {
                        continue;
                    }
                    let at = day.and_hms_opt(h, m, 0)?;
                    if at >= start {
                        if let Some(t) = Local.from_local_datetime(&at).earliest() {
                            return Some(t);
                        }
                    }
                }
            }
            day = day.succ_opt()?;
        }
        None
    }

    /// The schedule as a crontab line (`minute hour day_of_month month_of_year day_of_week`).
    pub fn line(&self) -> String {
        let [minute, hour, dow, dom, month] = &self.values;
        format!("{minute} {hour} {dom} {month} {dow}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_fire_time_follows_every_field() {
        let at = |text: &str| {
            chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M")
                .ok()
                .and_then(|t| Local.from_local_datetime(&t).earliest())
                .unwrap()
        };
        let next = |line: &str, after: &str| {
            Schedule::from_line(line)
                .unwrap()
                .next_after(at(after))
                .map(|t| t.format("%Y-%m-%d %H:%M").to_string())
        };
        assert_eq!(
            next("*/5 * * * *", "2026-01-01 10:02").as_deref(),
            Some("2026-01-01 10:05")
        );
        assert_eq!(
            next("0 2 * * *", "2026-01-01 10:02").as_deref(),
            Some("2026-01-02 02:00")
        );
        // 22-2 wraps around midnight.
        assert_eq!(
            next("0 22-2 * * *", "2026-01-01 23:30").as_deref(),
            Some("2026-01-02 00:00")
        );
        // 2026-01-05 is a Monday.
        assert_eq!(
            next("30 9 * * mon", "2026-01-01 00:00").as_deref(),
            Some("2026-01-05 09:30")
        );
        assert_eq!(next("0 0 31 2 *", "2026-01-01 00:00"), None);
    }

    fn field_of(e: &[ScheduleError]) -> Vec<Option<&'static str>> {
        e.iter().map(|e| e.field).collect()
    }

    #[test]
    fn a_line_maps_onto_crontabs_arguments() {
        let s = Schedule::from_line("*/5 2-4 * * 1-5").unwrap();
        let fields: Vec<_> = s.fields().collect();
        assert_eq!(
            fields,
            [
                ("minute", "*/5"),
                ("hour", "2-4"),
                ("day_of_week", "1-5"),
                ("day_of_month", "*"),
                ("month_of_year", "*"),
            ]
        );
        assert_eq!(s.line(), "*/5 2-4 * * 1-5");
    }

    #[test]
    fn celery_forms_are_accepted() {
        for line in [
            "0 1 * * *",
            "0,30 22-2 1-31/2 1-12 mon-fri",
            "59 23 31 12 6",
            "*/1 */24 * 3,6,9 Sunday,sat",
            "0 0 * * 0-6/2",
        ] {
            assert!(Schedule::from_line(line).is_ok(), "{line}");
        }
    }

    #[test]
    fn each_bad_field_is_named() {
        let cases = [
            ("60 * * * *", "minute", "out of range"),
            ("* 24 * * *", "hour", "out of range"),
            ("* * 0 * *", "day_of_month", "out of range"),
            ("* * * 13 *", "month_of_year", "out of range"),
            ("* * * * 7", "day_of_week", "out of range"),
            ("* * * JAN *", "month_of_year", "not a number"),
            ("* * L * *", "day_of_month", "not a number"),
            ("* * * * 5#2", "day_of_week", "weekday name"),
            ("*/0 * * * *", "minute", "step `0`"),
            ("5/15 * * * *", "minute", "a step after a single value"),
            ("1,,2 * * * *", "minute", "part ``"),
            ("* * * * funday", "day_of_week", "weekday name"),
            ("-1 * * * *", "minute", "not a number"),
        ];
        for (line, field, needle) in cases {
            let errors = Schedule::from_line(line).unwrap_err();
            assert_eq!(field_of(&errors), [Some(field)], "{line}");
            assert!(errors[0].message.contains(needle), "{line}: {errors:?}");
        }
    }

    #[test]
    fn a_line_needs_five_fields_and_every_bad_field_is_reported() {
        let e = Schedule::from_line("* * * *").unwrap_err();
        assert_eq!(field_of(&e), [None]);
        assert!(e[0].message.contains("has 4 fields"), "{e:?}");
        let e = Schedule::from_line("61 25 * * *").unwrap_err();
        assert_eq!(field_of(&e), [Some("minute"), Some("hour")]);
    }

    #[test]
    fn missing_keyword_fields_are_stars() {
        let s = Schedule::from_fields(|k| (k == "hour").then_some("3")).unwrap();
        assert_eq!(s.line(), "* 3 * * *");
    }
}
