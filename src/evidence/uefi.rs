//! The UEFI (TCG2) boot event log. It cannot change during a boot and the
//! agent does not outlive a boot, so it is read and base64-encoded once, at
//! the first request that needs it, and served from memory after that.

use std::path::PathBuf;
use std::sync::Arc;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use tokio::sync::OnceCell;

/// The boot log at one path.
#[derive(Debug, Clone)]
pub struct UefiLog {
    path: PathBuf,
    cached: Arc<OnceCell<Option<Arc<str>>>>,
}

impl UefiLog {
    /// A log at `path`; nothing is read until the first request.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            cached: Arc::default(),
        }
    }

    /// The log as base64, or `None` when there is no readable log.
    pub async fn base64(&self) -> Option<Arc<str>> {
        self.cached
            .get_or_init(|| async {
                match tokio::fs::read(&self.path).await {
                    Ok(bytes) if !bytes.is_empty() => Some(Arc::from(B64.encode(bytes))),
                    Ok(_) => None,
                    Err(e) => {
                        if e.kind() != std::io::ErrorKind::NotFound {
                            tracing::warn!("UEFI event log {}: {e}", self.path.display());
                        }
                        None
                    }
                }
            })
            .await
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn read_once_then_served_from_memory() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("log");
        std::fs::write(&path, b"\x01\x02").expect("write");
        let log = UefiLog::new(&path);
        assert_eq!(log.base64().await.as_deref(), Some("AQI="));
        std::fs::write(&path, b"changed").expect("write");
        assert_eq!(log.base64().await.as_deref(), Some("AQI="), "not re-read");
        assert_eq!(UefiLog::new("/nonexistent").base64().await, None);
    }
}
