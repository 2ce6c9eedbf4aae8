//! A task's schedule in words, for people: `every 5 minutes`, `at 02:30`, `at 09:00 on mon-fri`.
//! Anything less common reads field by field.

use crate::config::Schedule;

/// `schedule` in words.
pub fn schedule(schedule: &Schedule) -> String {
    let (minute, hour) = (schedule.get("minute"), schedule.get("hour"));
    let time = match (minute, hour) {
        ("*", "*") => "every minute".to_string(),
        (m, "*") if m.starts_with("*/") => format!("every {} minutes", &m[2..]),
        (m, "*") if is_number(m) => format!("at minute {m} of every hour"),
        (m, h) if is_number(m) && is_number(h) => format!("at {h:0>2}:{m:0>2}"),
        (m, h) if is_number(m) && h.starts_with("*/") => {
            format!("at minute {m} every {} hours", &h[2..])
        }
        (m, h) => format!("at minute {m}, hour {h}"),
    };
    let mut out = time;
    for (field, what) in [
        ("day_of_week", "on weekdays"),
        ("day_of_month", "on days"),
        ("month_of_year", "in months"),
    ] {
        let value = schedule.get(field);
        if value != "*" {
            out.push_str(&format!(" {what} {value}"));
        }
    }
    out.replace("on weekdays", "on")
}

fn is_number(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(line: &str) -> String {
        schedule(&Schedule::from_line(line).unwrap())
    }

    #[test]
    fn common_schedules_read_as_words() {
        assert_eq!(words("*/5 * * * *"), "every 5 minutes");
        assert_eq!(words("30 2 * * *"), "at 02:30");
        assert_eq!(words("0 9 * * 1-5"), "at 09:00 on 1-5");
        assert_eq!(words("0 22-2 1 * *"), "at minute 0, hour 22-2 on days 1");
    }
}
