//! Text that came from a peer, a client or a script, made safe to log:
//! control characters (a newline would start a forged log line, an escape
//! sequence would rewrite a terminal) are written as escapes, and the text
//! is cut to a length. Every untrusted string goes through [`escape`]
//! before it reaches a log line or an error message.

use std::fmt::Write as _;

/// The longest untrusted text a log line carries, in characters.
pub const MAX_LOGGED_CHARS: usize = 256;

/// `text` with control characters escaped (`\n`, `\r`, `\t`, `\\`, and
/// `\u{..}` for the others, including DEL and the C1 range) and cut to
/// [`MAX_LOGGED_CHARS`] characters, saying how many were left out.
pub fn escape(text: &str) -> String {
    escape_to(text, MAX_LOGGED_CHARS)
}

/// As [`escape`], cut to `max_chars` characters.
pub fn escape_to(text: &str, max_chars: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max_chars) + 8);
    let mut chars = text.chars();
    for (shown, c) in chars.by_ref().enumerate() {
        if shown == max_chars {
            let rest = 1 + chars.count();
            let _ = write!(out, "… ({rest} more characters)");
            return out;
        }
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() || matches!(c, '\u{2028}' | '\u{2029}') => {
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out
}

/// Bytes that may not be UTF-8 (a script's output), escaped the same way;
/// invalid sequences show as U+FFFD.
pub fn escape_bytes(bytes: &[u8], max_chars: usize) -> String {
    escape_to(&String::from_utf8_lossy(bytes), max_chars)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_cannot_start_a_line_or_move_the_cursor() {
        let forged = "ok\nFORGED INFO line\r\u{1b}[2J\u{7f}\u{85}tab\there\\";
        let escaped = escape(forged);
        assert_eq!(
            escaped,
            "ok\\nFORGED INFO line\\r\\u{1b}[2J\\u{7f}\\u{85}tab\\there\\\\"
        );
        assert!(!escaped.chars().any(char::is_control));
        assert_eq!(escape("plain text, ünïcode"), "plain text, ünïcode");
    }

    #[test]
    fn long_text_is_cut_and_says_so() {
        let long = "a".repeat(1000);
        let escaped = escape_to(&long, 10);
        assert_eq!(escaped, "aaaaaaaaaa… (990 more characters)");
        assert_eq!(escape_bytes(b"\xffx\n", 10), "\u{fffd}x\\n");
    }
}
