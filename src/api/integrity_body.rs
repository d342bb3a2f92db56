//! The integrity quote's JSON body. The IMA list can be megabytes, so a
//! large one is streamed from the log file straight into the response,
//! JSON-escaped on the way, instead of being built in memory.

use actix_web::web::Bytes;
use actix_web::HttpResponse;
use futures_util::stream::{self, StreamExt};
use serde_json::{json, Map, Value};
use tokio::io::AsyncReadExt;

use crate::evidence::ImaSlice;

/// IMA slices up to this size are sent in one piece (one sized body, few
/// TLS records); larger ones are streamed in chunks of this size.
const INLINE_LIMIT: u64 = 256 * 1024;

/// Builds the 200 response: `results` plus, when present, the IMA list.
pub async fn respond(
    mut results: Map<String, Value>,
    ima: Option<ImaSlice>,
) -> std::io::Result<HttpResponse> {
    let Some(ima) = ima else {
        return Ok(super::error::success(results));
    };
    results.insert("ima_measurement_list_entry".into(), json!(ima.entry));
    if ima.len <= INLINE_LIMIT {
        let mut text = Vec::with_capacity(usize::try_from(ima.len).unwrap_or(0));
        ima.open().await?.read_to_end(&mut text).await?;
        results.insert(
            "ima_measurement_list".into(),
            Value::String(String::from_utf8_lossy(&text).into_owned()),
        );
        return Ok(super::error::success(results));
    }
    // `{"code":200,"status":"Success","results":{...,"ima_measurement_list":"` <escaped log> `"}}`
    let fields = serde_json::to_string(&results)?;
    let fields = fields.strip_suffix('}').unwrap_or(&fields);
    let separator = if results.is_empty() { "" } else { "," };
    let head = format!(
        r#"{{"code":200,"status":"Success","results":{fields}{separator}"ima_measurement_list":""#
    );
    let reader = ima.open().await?;
    let body = stream::unfold(Some(reader), |state| async move {
        let mut reader = state?;
        let mut raw = vec![0u8; INLINE_LIMIT as usize];
        match reader.read(&mut raw).await {
            Ok(0) => None,
            Ok(n) => {
                let mut escaped = Vec::with_capacity(n + n / 8);
                escape_json_into(&mut escaped, &raw[..n]);
                Some((Ok(Bytes::from(escaped)), Some(reader)))
            }
            Err(e) => Some((Err(e), None)),
        }
    });
    let stream = stream::once(async move { Ok::<_, std::io::Error>(Bytes::from(head)) })
        .chain(body)
        .chain(stream::once(async { Ok(Bytes::from_static(b"\"}}")) }));
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .streaming(stream))
}

/// JSON string escaping, byte by byte. Bytes ≥ 0x80 pass through, so UTF-8
/// text stays UTF-8 even when a chunk boundary splits a character.
pub fn escape_json_into(out: &mut Vec<u8>, input: &[u8]) {
    for &b in input {
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0..=0x1f => out.extend_from_slice(format!("\\u{b:04x}").as_bytes()),
            _ => out.push(b),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaped_text_round_trips_through_a_json_parser() {
        let input = "10 abc ima-ng sha256:00 /a \"quoted\" back\\slash\ttab\u{1}ctl é\n";
        let mut out = b"\"".to_vec();
        escape_json_into(&mut out, input.as_bytes());
        out.push(b'"');
        let parsed: String = serde_json::from_slice(&out).expect("valid JSON string");
        assert_eq!(parsed, input);
    }
}
