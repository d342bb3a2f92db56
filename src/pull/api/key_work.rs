//! RSA work of key halves and notifications, queued: one job at a time,
//! at a bounded rate, on the blocking pool.

use std::sync::Arc;
use std::time::Duration;

use super::error::ApiError;

/// Key-half and notification jobs start at most this often: 100 a second,
/// far more than a tenant and a verifier send, and a bounded share of one
/// core (an RSA-2048 private operation takes 1-2 ms) under a flood.
const KEY_JOB_GAP: Duration = Duration::from_millis(10);

/// Runs RSA (and the payload work it may start) on the blocking pool, one
/// job at a time, in arrival order, and each at least 10 ms after
/// the one before: a flood of key halves waits its turn asynchronously
/// instead of taking the cores that answer quotes.
#[derive(Debug, Clone)]
pub struct KeyWork {
    /// Held by the job running; when the next job may start.
    next_start: Arc<tokio::sync::Mutex<tokio::time::Instant>>,
}

impl Default for KeyWork {
    fn default() -> Self {
        Self {
            next_start: Arc::new(tokio::sync::Mutex::new(tokio::time::Instant::now())),
        }
    }
}

impl KeyWork {
    /// Runs `work` when its turn comes.
    pub async fn run<T: Send + 'static, E: Into<ApiError> + Send + 'static>(
        &self,
        work: impl FnOnce() -> Result<T, E> + Send + 'static,
    ) -> Result<T, ApiError> {
        // tokio's mutex queues its waiters first come, first served.
        let mut next_start = self.next_start.lock().await;
        tokio::time::sleep_until(*next_start).await;
        *next_start = tokio::time::Instant::now() + KEY_JOB_GAP;
        match tokio::task::spawn_blocking(work).await {
            Ok(result) => result.map_err(Into::into),
            Err(_) => Err(ApiError::Busy),
        }
    }
}
