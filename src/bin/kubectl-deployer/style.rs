//! Text helpers shared by the views: colours (only on a terminal), durations written the way
//! kubectl writes them, a progress bar, aligned tables whose cells may be coloured, and fitting a
//! coloured line to the width of a terminal.

use std::ffi::OsStr;

use chrono::TimeDelta;
use crossterm::style::{Attribute, Color, Stylize, style};

/// How text is decorated: ANSI colours, and Unicode glyphs for the progress bar.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Style {
    /// Colour the text (ANSI escape sequences).
    pub color: bool,
    /// Draw the progress bar with block glyphs rather than `#` and `-`.
    pub unicode: bool,
}

impl Style {
    /// Plain text: what a pipe or a log file gets.
    pub const PLAIN: Style = Style { color: false, unicode: false };

    /// The style for an output stream: colours and glyphs on a terminal, plain text when piped.
    /// `NO_COLOR` (set and not empty, see no-color.org) and `TERM=dumb` turn the colours off.
    pub fn detect(is_terminal: bool, no_color: Option<&OsStr>, term: Option<&OsStr>) -> Style {
        let no_color = no_color.is_some_and(|v| !v.is_empty()) || term.is_some_and(|t| t == "dumb");
        Style { color: is_terminal && !no_color, unicode: is_terminal }
    }

    /// `text` in the colour of `tone` (unchanged when colours are off).
    pub fn paint(&self, text: &str, tone: Tone) -> String {
        if !self.color || text.is_empty() {
            return text.to_string();
        }
        let styled = style(text);
        match tone {
            Tone::Plain => text.to_string(),
            Tone::Good => styled.with(Color::Green).to_string(),
            Tone::Bad => styled.with(Color::Red).attribute(Attribute::Bold).to_string(),
            Tone::Warn => styled.with(Color::Yellow).to_string(),
            Tone::Busy => styled.with(Color::Cyan).to_string(),
            Tone::Dim => styled.attribute(Attribute::Dim).to_string(),
            Tone::Strong => styled.attribute(Attribute::Bold).to_string(),
        }
    }

    /// A bar of `width` cells filled to `percent`: `[######--------------]`.
    pub fn bar(&self, percent: i32, width: usize, tone: Tone) -> String {
        let percent = usize::try_from(percent.clamp(0, 100)).unwrap_or(0);
        let filled = (percent * width + 50) / 100;
        let (on, off) = if self.unicode { ('█', '░') } else { ('#', '-') };
        let full: String = std::iter::repeat_n(on, filled).collect();
        let empty: String = std::iter::repeat_n(off, width - filled).collect();
        format!("[{}{}]", self.paint(&full, tone), self.paint(&empty, Tone::Dim))
    }
}

/// What a piece of text means, hence its colour.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tone {
    /// No decoration.
    Plain,
    /// Healthy, finished (green).
    Good,
    /// Failed (bold red).
    Bad,
    /// Needs attention: paused, short of replicas, a Warning event (yellow).
    Warn,
    /// Moving (cyan).
    Busy,
    /// Secondary (dim).
    Dim,
    /// Headings (bold).
    Strong,
}

/// One cell of a [`table`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cell {
    /// The text (without escape sequences: it sets the column's width).
    pub text: String,
    /// Its colour.
    pub tone: Tone,
}

impl Cell {
    /// A cell of plain text.
    pub fn plain(text: impl Into<String>) -> Cell {
        Cell { text: text.into(), tone: Tone::Plain }
    }

    /// A cell in the colour of `tone`.
    pub fn toned(text: impl Into<String>, tone: Tone) -> Cell {
        Cell { text: text.into(), tone }
    }
}

/// Rows aligned in columns three spaces apart, as kubectl prints them, each line starting with
/// `indent`. The last column is not padded (no trailing blanks).
pub fn table(rows: &[Vec<Cell>], style: Style, indent: &str) -> Vec<String> {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| rows.iter().filter_map(|r| r.get(c)).map(|cell| width(&cell.text)).max().unwrap_or(0))
        .collect();
    rows.iter()
        .map(|row| {
            let mut line = indent.to_string();
            for (c, cell) in row.iter().enumerate() {
                line.push_str(&style.paint(&cell.text, cell.tone));
                if c + 1 < row.len() {
                    line.push_str(&" ".repeat(widths[c] - width(&cell.text) + 3));
                }
            }
            line
        })
        .collect()
}

/// The number of terminal cells `text` takes (every character counts one: the views use no
/// wide characters).
pub fn width(text: &str) -> usize {
    text.chars().count()
}

/// `line` cut to `max` visible cells, escape sequences kept (and closed if the cut left a colour
/// open); a cut line ends with `…`.
pub fn fit(line: &str, max: usize) -> String {
    if visible_width(line) <= max {
        return line.to_string();
    }
    let mut out = String::with_capacity(line.len());
    let (mut visible, mut styled) = (0, false);
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            styled = true;
            out.push(c);
            for c in chars.by_ref() {
                out.push(c);
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else if visible + 1 < max {
            out.push(c);
            visible += 1;
        } else {
            break;
        }
    }
    out.push('…');
    if styled {
        out.push_str("\x1b[0m");
    }
    out
}

/// The cells `line` takes on a terminal: its characters less its escape sequences (`ESC [ … m`).
pub fn visible_width(line: &str) -> usize {
    let (mut n, mut escape) = (0, false);
    for c in line.chars() {
        match (escape, c) {
            (false, '\x1b') => escape = true,
            (false, _) => n += 1,
            (true, c) if c.is_ascii_alphabetic() => escape = false,
            (true, _) => {}
        }
    }
    n
}

/// A duration as kubectl prints ages: `45s`, `3m20s`, `2h`, `5d`, `2y30d` (the same thresholds).
pub fn human(d: TimeDelta) -> String {
    let seconds = d.num_seconds();
    if seconds < -1 {
        return "<invalid>".into();
    }
    let seconds = seconds.max(0);
    let (minutes, hours) = (seconds / 60, seconds / 3600);
    let days = hours / 24;
    let years = days / 365;
    let pair = |a: i64, ua: &str, b: i64, ub: &str| {
        if b == 0 { format!("{a}{ua}") } else { format!("{a}{ua}{b}{ub}") }
    };
    if seconds < 120 {
        format!("{seconds}s")
    } else if minutes < 10 {
        pair(minutes, "m", seconds % 60, "s")
    } else if minutes < 180 {
        format!("{minutes}m")
    } else if hours < 8 {
        pair(hours, "h", minutes % 60, "m")
    } else if hours < 48 {
        format!("{hours}h")
    } else if hours < 24 * 8 {
        pair(days, "d", hours % 24, "h")
    } else if days < 365 * 2 {
        format!("{days}d")
    } else if years < 8 {
        pair(years, "y", days % 365, "d")
    } else {
        format!("{years}y")
    }
}

/// Time left, rounded up to the second (as the operator's `24s till next step`), then written as
/// [`human`].
pub fn left(d: TimeDelta) -> String {
    let millis = d.num_milliseconds().max(0);
    human(TimeDelta::seconds((millis + 999) / 1000))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colours_only_on_a_terminal_without_no_color() {
        let s = |tty, nc: Option<&str>, term: Option<&str>| {
            Style::detect(tty, nc.map(OsStr::new), term.map(OsStr::new))
        };
        assert_eq!(s(true, None, Some("xterm")), Style { color: true, unicode: true });
        assert_eq!(s(false, None, Some("xterm")), Style::PLAIN);
        assert_eq!(s(true, Some("1"), None), Style { color: false, unicode: true });
        assert!(s(true, Some(""), None).color, "an empty NO_COLOR does not count");
        assert!(!s(true, None, Some("dumb")).color);
    }

    #[test]
    fn paint_adds_escapes_only_with_colours() {
        assert_eq!(Style::PLAIN.paint("Done", Tone::Good), "Done");
        let c = Style { color: true, unicode: true }.paint("Done", Tone::Good);
        assert!(c.starts_with('\x1b') && c.contains("Done") && c.ends_with("\x1b[39m"), "{c:?}");
    }

    #[test]
    fn bars_fill_to_the_percent() {
        assert_eq!(Style::PLAIN.bar(30, 10, Tone::Busy), "[###-------]");
        assert_eq!(Style::PLAIN.bar(0, 4, Tone::Busy), "[----]");
        assert_eq!(Style::PLAIN.bar(100, 4, Tone::Busy), "[####]");
        assert_eq!(Style::PLAIN.bar(250, 4, Tone::Busy), "[####]");
        assert_eq!(Style { color: false, unicode: true }.bar(50, 4, Tone::Busy), "[██░░]");
    }

    #[test]
    fn tables_align_on_the_plain_text_and_do_not_pad_the_last_column() {
        let rows = vec![
            vec![Cell::plain("NAME"), Cell::plain("PHASE"), Cell::plain("AGE")],
            vec![Cell::plain("nginx"), Cell::toned("Waiting", Tone::Busy), Cell::plain("2m")],
        ];
        assert_eq!(table(&rows, Style::PLAIN, ""), ["NAME    PHASE     AGE", "nginx   Waiting   2m"]);
        let coloured = table(&rows, Style { color: true, unicode: true }, "  ");
        assert!(coloured[1].starts_with("  nginx   \x1b["), "{:?}", coloured[1]);
        assert!(coloured[1].ends_with("   2m"), "{:?}", coloured[1]);
    }

    #[test]
    fn fit_cuts_visible_text_and_keeps_escapes_balanced() {
        assert_eq!(fit("abcdef", 10), "abcdef");
        assert_eq!(fit("abcdef", 6), "abcdef");
        assert_eq!(fit("abcdef", 4), "abc…");
        let red = Style { color: true, unicode: false }.paint("abcdef", Tone::Warn);
        let cut = fit(&red, 4);
        assert!(cut.contains("abc…") && cut.ends_with("\x1b[0m"), "{cut:?}");
        assert_eq!(fit(&red, 6), red, "escapes do not count towards the width");
    }

    #[test]
    fn human_durations_follow_kubectl() {
        let h = |s| human(TimeDelta::seconds(s));
        assert_eq!(h(0), "0s");
        assert_eq!(h(119), "119s");
        assert_eq!(h(120), "2m");
        assert_eq!(h(200), "3m20s");
        assert_eq!(h(45 * 60), "45m");
        assert_eq!(h(3 * 3600 + 20 * 60), "3h20m");
        assert_eq!(h(20 * 3600), "20h");
        assert_eq!(h(3 * 86400 + 5 * 3600), "3d5h");
        assert_eq!(h(40 * 86400), "40d");
        assert_eq!(h(3 * 365 * 86400 + 86400), "3y1d");
        assert_eq!(h(10 * 365 * 86400), "10y");
        assert_eq!(h(-5), "<invalid>");
    }

    #[test]
    fn time_left_rounds_up_to_the_second() {
        assert_eq!(left(TimeDelta::milliseconds(23_001)), "24s");
        assert_eq!(left(TimeDelta::milliseconds(24_000)), "24s");
        assert_eq!(left(TimeDelta::milliseconds(-300)), "0s");
        assert_eq!(left(TimeDelta::seconds(300)), "5m");
    }
}
