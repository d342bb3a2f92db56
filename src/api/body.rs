//! Request bodies, bounded: each endpoint has its own size limit, a body
//! must arrive within the configured time, and all bodies being read at
//! once share one memory budget, so no pattern of requests can make the
//! agent hold more than that in request bodies.

use std::sync::Arc;
use std::time::Duration;

use actix_web::{web, HttpRequest};
use futures_util::StreamExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::error::ApiError;

/// All request bodies being read at once hold at most this much memory.
pub const IN_FLIGHT_BUDGET: usize = 16 * 1024 * 1024;
/// The budget is counted in units of this many bytes.
const UNIT: usize = 1024;
/// `keys/vkey`: one RSA-OAEP ciphertext in JSON.
pub const VKEY_LIMIT: usize = 8 * 1024;
/// `notifications/revocation`: a message with its context and signature.
pub const REVOCATION_LIMIT: usize = 256 * 1024;

/// The limits and the shared budget; cheap to clone.
#[derive(Debug, Clone)]
pub struct BodyLimits {
    /// `keys/ukey`: the U half and the base64 payload.
    pub ukey: usize,
    /// Time for a whole body to arrive (`request_body_timeout`).
    pub timeout: Duration,
    budget: Arc<Semaphore>,
}

/// A body read into memory, and its share of the budget (released on drop).
pub struct Body {
    chunks: Vec<web::Bytes>,
    _permits: Vec<OwnedSemaphorePermit>,
}

impl BodyLimits {
    /// Limits for payloads of up to `max_payload` decrypted bytes (the
    /// ukey body carries them as base64, plus the key and tag).
    pub fn new(max_payload: usize, timeout: Duration) -> Self {
        Self {
            ukey: max_payload.saturating_mul(4) / 3 + 64 * 1024,
            timeout,
            budget: Arc::new(Semaphore::new(IN_FLIGHT_BUDGET / UNIT)),
        }
    }

    /// Reads a body of at most `limit` bytes within the time limit. A
    /// declared length over the limit is refused before anything is read
    /// (`Upgrade` and chunked requests never get here: see
    /// [`super::refuse_unframed`]).
    pub async fn read(
        &self,
        req: &HttpRequest,
        body: web::Payload,
        limit: usize,
    ) -> Result<Body, ApiError> {
        let declared = req
            .headers()
            .get(actix_web::http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
        if declared.is_some_and(|n| n > limit) {
            return Err(ApiError::TooLarge(limit));
        }
        if let Some(n) = declared {
            // Refuse at once what could not be held anyway.
            Reservation::default().cover(&self.budget, n)?;
        }
        tokio::time::timeout(self.timeout, self.collect(body, limit))
            .await
            .map_err(|_| ApiError::BodyTimeout(self.timeout.as_secs()))?
    }

    /// Reads the body as the chunks that arrive (never joined into one
    /// buffer), charging the budget for each before it is kept.
    async fn collect(&self, mut body: web::Payload, limit: usize) -> Result<Body, ApiError> {
        let mut chunks = Vec::new();
        let mut len = 0usize;
        let mut reservation = Reservation::default();
        while let Some(chunk) = body.next().await {
            let chunk = chunk
                .map_err(|e| ApiError::BadBody(format!("Cannot read the request body: {e}")))?;
            if len + chunk.len() > limit {
                return Err(ApiError::TooLarge(limit));
            }
            len += chunk.len();
            reservation.cover(&self.budget, len)?;
            // A copy of exactly its length: the chunk itself may be a slice
            // of a larger read buffer, which keeping it would pin.
            chunks.push(web::Bytes::copy_from_slice(&chunk));
        }
        Ok(Body {
            chunks,
            _permits: reservation.permits,
        })
    }
}

/// Budget units held for one body.
#[derive(Default)]
struct Reservation {
    permits: Vec<OwnedSemaphorePermit>,
    units: usize,
}

impl Reservation {
    /// Holds enough units for `bytes`; refuses (503) when the budget is spent.
    fn cover(&mut self, budget: &Arc<Semaphore>, bytes: usize) -> Result<(), ApiError> {
        let needed = bytes.div_ceil(UNIT).saturating_sub(self.units);
        if needed == 0 {
            return Ok(());
        }
        let units = u32::try_from(needed).map_err(|_| ApiError::Busy)?;
        let permit = budget
            .clone()
            .try_acquire_many_owned(units)
            .map_err(|_| ApiError::Busy)?;
        self.permits.push(permit);
        self.units += needed;
        Ok(())
    }
}

impl Body {
    /// The body as the JSON object `T`, parsed across the chunks.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, ApiError> {
        let reader = ChunkReader {
            chunks: &self.chunks,
            at: (0, 0),
        };
        serde_json::from_reader(reader)
            .map_err(|e| ApiError::BadBody(format!("Invalid JSON body: {e}")))
    }
}

/// `Read` over the chunks in order.
struct ChunkReader<'a> {
    chunks: &'a [web::Bytes],
    /// (chunk, offset in it)
    at: (usize, usize),
}

impl std::io::Read for ChunkReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while let Some(chunk) = self.chunks.get(self.at.0) {
            let rest = &chunk[self.at.1..];
            if rest.is_empty() {
                self.at = (self.at.0 + 1, 0);
                continue;
            }
            let n = rest.len().min(buf.len());
            buf[..n].copy_from_slice(&rest[..n]);
            self.at.1 += n;
            return Ok(n);
        }
        Ok(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ukey_limit_fits_a_base64_payload() {
        let limits = BodyLimits::new(3 * 1024 * 1024, Duration::from_secs(30));
        assert_eq!(limits.ukey, 4 * 1024 * 1024 + 64 * 1024);
        assert_eq!(limits.budget.available_permits(), IN_FLIGHT_BUDGET / UNIT);
    }

    #[test]
    fn json_is_parsed_across_chunks() {
        let chunks: Vec<web::Bytes> = ["{\"encrypted", "_key\": \"ab", "c\"}", ""]
            .iter()
            .map(|c| web::Bytes::from_static(c.as_bytes()))
            .collect();
        let body = Body {
            chunks,
            _permits: Vec::new(),
        };
        let v: serde_json::Value = body.json().expect("json");
        assert_eq!(v["encrypted_key"], "abc");
    }
}
