//! JSON string escaping for the IMA list, which is sent as one JSON string
//! of up to tens of megabytes: fast on the text an IMA log is (printable
//! ASCII and a newline per line), exact on anything else.

/// Appends `input` to `out` escaped for the inside of a JSON string.
/// Bytes ≥ 0x80 pass through, so UTF-8 text stays UTF-8 even when a chunk
/// boundary splits a character.
pub fn escape_json_into(out: &mut Vec<u8>, input: &[u8]) {
    // One newline per IMA line of ~150 bytes: a little room for the `\n`s.
    out.reserve(input.len() + input.len() / 64 + 16);
    if has_control_other_than_newline(input) {
        escape_each(out, input);
        return;
    }
    // Only `\n`, `"` and `\` need escaping here: find them with memchr
    // (vectorised) and copy the runs between them whole.
    let mut start = 0;
    for at in memchr::memchr3_iter(b'\n', b'"', b'\\', input) {
        out.extend_from_slice(&input[start..at]);
        out.extend_from_slice(match input[at] {
            b'\n' => b"\\n",
            b'"' => b"\\\"",
            _ => b"\\\\",
        });
        start = at + 1;
    }
    out.extend_from_slice(&input[start..]);
}

/// Whether `input` holds a control byte besides `\n` (written so that the
/// compiler vectorises it: no early exit).
fn has_control_other_than_newline(input: &[u8]) -> bool {
    input
        .iter()
        .fold(0u8, |seen, &b| seen | u8::from(b < 0x20 && b != b'\n'))
        != 0
}

/// The general case, byte by byte.
fn escape_each(out: &mut Vec<u8>, input: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut start = 0;
    for (i, &b) in input.iter().enumerate() {
        let escaped: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0..=0x1f => &[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 0xf)],
            ],
            _ => continue,
        };
        out.extend_from_slice(&input[start..i]);
        out.extend_from_slice(escaped);
        start = i + 1;
    }
    out.extend_from_slice(&input[start..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(input: &str) {
        let mut out = b"\"".to_vec();
        escape_json_into(&mut out, input.as_bytes());
        out.push(b'"');
        let parsed: String = serde_json::from_slice(&out).expect("valid JSON string");
        assert_eq!(parsed, input);
        assert_eq!(
            out,
            serde_json::to_vec(input).expect("serde"),
            "the same bytes as serde_json"
        );
    }

    #[test]
    fn ima_text_and_every_special_byte_round_trip_through_a_json_parser() {
        round_trip("10 abc ima-ng sha256:00 /a \"quoted\" back\\slash é\n");
        round_trip("tab\tcr\rctl\u{1}\u{1f}del\u{7f} and a \"quote\"\n");
        round_trip("");
        round_trip("no specials at all");
        let all: String = (0u8..0x80).map(char::from).collect();
        round_trip(&all);
    }

    #[test]
    fn a_large_log_is_escaped_like_serde_json_does() {
        let log: String = (0..5_000)
            .map(|i| format!("10 {i:040x} ima-ng sha256:{i:064x} /usr/bin/file \"{i}\"\n"))
            .collect();
        round_trip(&log);
    }
}
