//! Query strings parsed into typed values. A bad value is a 400 naming the
//! parameter; unknown parameters (such as the obsolete `vmask`) are ignored.

use std::collections::HashMap;
use std::str::FromStr;

use super::error::ApiError;
use crate::attestation::{Nonce, PcrMask};

/// The parsed query of one request.
pub struct Query(HashMap<String, String>);

impl Query {
    /// Parses `a=1&b=2` (URL-decoded; a repeated name keeps its first value).
    pub fn parse(raw: &str) -> Result<Self, ApiError> {
        let pairs: Vec<(String, String)> =
            serde_urlencoded::from_str(raw).map_err(|_| ApiError::InvalidParam {
                name: "query",
                reason: "not a valid query string".into(),
            })?;
        let mut map = HashMap::new();
        for (k, v) in pairs {
            map.entry(k).or_insert(v);
        }
        Ok(Self(map))
    }

    fn typed<T: FromStr>(&self, name: &'static str) -> Result<Option<T>, ApiError>
    where
        T::Err: ToString,
    {
        self.0
            .get(name)
            .map(|v| {
                v.parse::<T>().map_err(|e| ApiError::InvalidParam {
                    name,
                    reason: e.to_string(),
                })
            })
            .transpose()
    }

    /// The required `nonce`.
    pub fn nonce(&self) -> Result<Nonce, ApiError> {
        self.typed("nonce")?.ok_or(ApiError::MissingParam("nonce"))
    }

    /// The required `challenge` of `keys/verify` (same form as a nonce).
    pub fn challenge(&self) -> Result<Nonce, ApiError> {
        self.typed("challenge")?
            .ok_or(ApiError::MissingParam("challenge"))
    }

    /// `mask`, 0 (PCR 16 only) when absent.
    pub fn mask(&self) -> Result<PcrMask, ApiError> {
        Ok(self.typed("mask")?.unwrap_or_default())
    }

    /// `partial`: `1` leaves the NK out, `0` (or absent) includes it.
    pub fn partial(&self) -> Result<bool, ApiError> {
        match self.0.get("partial").map(String::as_str) {
            None | Some("0") => Ok(false),
            Some("1") => Ok(true),
            Some(_) => Err(ApiError::InvalidParam {
                name: "partial",
                reason: "must be 0 or 1".into(),
            }),
        }
    }

    /// `ima_ml_entry`, 0 when absent.
    pub fn ima_ml_entry(&self) -> Result<u64, ApiError> {
        match self.0.get("ima_ml_entry") {
            None => Ok(0),
            Some(v) if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) => {
                v.parse().map_err(|_| ApiError::InvalidParam {
                    name: "ima_ml_entry",
                    reason: "too large".into(),
                })
            }
            Some(_) => Err(ApiError::InvalidParam {
                name: "ima_ml_entry",
                reason: "must be a non-negative decimal integer".into(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bad_param(result: Result<impl std::fmt::Debug, ApiError>) -> String {
        match result {
            Err(e @ (ApiError::InvalidParam { .. } | ApiError::MissingParam(_))) => e.to_string(),
            other => panic!("expected a parameter error, got {other:?}"),
        }
    }

    #[test]
    fn verifier_query_parses() {
        let q = Query::parse("nonce=Ai5M5SjYjnkyv4P7itH1&mask=0x408400&partial=1&ima_ml_entry=12")
            .expect("query");
        assert_eq!(q.nonce().expect("nonce").as_str(), "Ai5M5SjYjnkyv4P7itH1");
        assert_eq!(
            q.mask().expect("mask").with_data_pcr(),
            vec![10, 15, 16, 22]
        );
        assert!(q.partial().expect("partial"));
        assert_eq!(q.ima_ml_entry().expect("entry"), 12);
        let defaults = Query::parse("nonce=abc").expect("query");
        assert_eq!(
            (defaults.partial().ok(), defaults.ima_ml_entry().ok()),
            (Some(false), Some(0))
        );
    }

    #[test]
    fn every_bad_form_is_a_400_naming_its_parameter() {
        let cases: [(&str, &str); 14] = [
            ("", "nonce"),
            ("nonce=", "nonce"),
            ("nonce=abc%20def", "nonce"),
            ("nonce=%00abc", "nonce"),
            ("nonce=x&mask=0xZZ", "mask"),
            ("nonce=x&mask=0x1000000", "mask"),
            ("nonce=x&mask=", "mask"),
            ("nonce=x&partial=2", "partial"),
            ("nonce=x&partial=true", "partial"),
            ("nonce=x&ima_ml_entry=-1", "ima_ml_entry"),
            ("nonce=x&ima_ml_entry=1.5", "ima_ml_entry"),
            (
                "nonce=x&ima_ml_entry=99999999999999999999999",
                "ima_ml_entry",
            ),
            ("nonce=x&ima_ml_entry=", "ima_ml_entry"),
            ("nonce=x&mask=0x%", "mask"),
        ];
        for (raw, name) in cases {
            let msg = match Query::parse(raw) {
                Err(e) => e.to_string(),
                Ok(q) => match name {
                    "nonce" => bad_param(q.nonce()),
                    "mask" => bad_param(q.mask()),
                    "partial" => bad_param(q.partial()),
                    _ => bad_param(q.ima_ml_entry()),
                },
            };
            assert!(msg.contains(name), "{raw}: {msg}");
        }
    }
}
