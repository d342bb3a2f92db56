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
    bytes: Vec<u8>,
    _permits: Vec<OwnedSemaphorePermit>,
}

impl BodyLimits {
    /// Limits with a ukey body of at most `ukey` bytes.
    pub fn new(ukey: usize, timeout: Duration) -> Self {
        Self {
            ukey,
            timeout,
            budget: Arc::new(Semaphore::new(IN_FLIGHT_BUDGET / UNIT)),
        }
    }

    /// Reads a body of at most `limit` bytes within the time limit. A
    /// declared length over the limit is refused before anything is read
    /// (`Upgrade` and chunked requests never get here: see
    /// `refuse_unframed` in the middleware).
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
        // A declared length is held from the budget before anything is
        // read: what could not be held anyway is refused at once.
        let mut reservation = Reservation::default();
        let mut bytes = Vec::new();
        if let Some(n) = declared {
            reservation.cover(&self.budget, n)?;
            bytes.reserve_exact(n);
        }
        let read = self.collect(body, limit, bytes, &mut reservation);
        let bytes = tokio::time::timeout(self.timeout, read)
            .await
            .map_err(|_| ApiError::BodyTimeout(self.timeout.as_secs()))??;
        Ok(Body {
            bytes,
            _permits: reservation.permits,
        })
    }

    /// Reads the body into one buffer, charging the budget for its
    /// capacity before it grows. One allocation per body (of the declared
    /// length, when there is one) goes back to the system when it is
    /// freed; many small ones would stay in the allocator's per-thread
    /// arenas, and the next large body would add to them.
    async fn collect(
        &self,
        mut body: web::Payload,
        limit: usize,
        mut bytes: Vec<u8>,
        reservation: &mut Reservation,
    ) -> Result<Vec<u8>, ApiError> {
        while let Some(chunk) = body.next().await {
            let chunk = chunk
                .map_err(|e| ApiError::BadBody(format!("Cannot read the request body: {e}")))?;
            let len = bytes.len() + chunk.len();
            if len > limit {
                return Err(ApiError::TooLarge(limit));
            }
            if len > bytes.capacity() {
                let capacity = len.max(bytes.capacity() * 2).min(limit);
                reservation.cover(&self.budget, capacity)?;
                bytes.reserve_exact(capacity - bytes.len());
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(bytes)
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
    /// The body as the JSON object `T`.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, ApiError> {
        serde_json::from_slice(&self.bytes)
            .map_err(|e| ApiError::BadBody(format!("Invalid JSON body: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_whole_budget_is_free_at_first() {
        let limits = BodyLimits::new(4 * 1024 * 1024, Duration::from_secs(30));
        assert_eq!(limits.budget.available_permits(), IN_FLIGHT_BUDGET / UNIT);
    }

    #[test]
    fn the_budget_is_held_for_what_a_body_holds_and_given_back_when_it_drops() {
        let limits = BodyLimits::new(4 * 1024 * 1024, Duration::from_secs(30));
        let all = IN_FLIGHT_BUDGET / UNIT;
        let mut held = Reservation::default();
        held.cover(&limits.budget, 10 * 1024 * 1024).expect("fits");
        assert_eq!(limits.budget.available_permits(), all - 10 * 1024);
        // Growing to 12 MiB takes only the difference.
        held.cover(&limits.budget, 12 * 1024 * 1024).expect("fits");
        assert_eq!(limits.budget.available_permits(), all - 12 * 1024);
        // A second body that does not fit beside it is refused (503).
        let mut other = Reservation::default();
        assert!(matches!(
            other.cover(&limits.budget, 5 * 1024 * 1024),
            Err(ApiError::Busy)
        ));
        drop(held);
        assert_eq!(limits.budget.available_permits(), all);
        other
            .cover(&limits.budget, 5 * 1024 * 1024)
            .expect("fits now");
        let body = Body {
            bytes: br#"{"encrypted_key": "abc"}"#.to_vec(),
            _permits: other.permits,
        };
        let v: serde_json::Value = body.json().expect("json");
        assert_eq!(v["encrypted_key"], "abc");
        drop(body);
        assert_eq!(limits.budget.available_permits(), all);
    }
}
