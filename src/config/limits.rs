//! The keys that bound what clients of the API may hold: time,
//! connections, memory.

use std::time::Duration;

use super::error::ConfigError;
use super::raw::RawAgentSection;
use super::values;

/// Bounds on what clients of the API may hold: time, connections, memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiLimits {
    /// Time for a request's head to arrive (`request_head_timeout`).
    pub head_timeout: Duration,
    /// Time for a request's body to arrive (`request_body_timeout`).
    pub body_timeout: Duration,
    /// Connections served at once; more are closed as they are accepted
    /// (`max_connections`).
    pub max_connections: usize,
    /// Largest `keys/ukey` body: room for a tenant payload of
    /// `max_payload_size` decrypted bytes as base64, plus the key and tag.
    pub ukey_body_limit: usize,
    /// Connections one client address may hold at once
    /// (`max_connections_per_client`).
    pub max_connections_per_client: usize,
    /// Client addresses served; empty = any (`allowed_client_cidrs`).
    pub allowed_client_cidrs: Vec<values::ClientCidr>,
}

impl ApiLimits {
    /// `request_head_timeout`, `request_body_timeout`, `max_connections`,
    /// `max_payload_size`, `max_connections_per_client` and
    /// `allowed_client_cidrs`.
    pub(super) fn from_raw(raw: &RawAgentSection) -> Result<Self, ConfigError> {
        Ok(Self {
            head_timeout: raw.parse("request_head_timeout", "10", values::seconds)?,
            body_timeout: raw.parse("request_body_timeout", "30", values::seconds)?,
            max_connections: raw.parse("max_connections", "512", values::connection_count)?,
            ukey_body_limit: ukey_body_limit(raw.parse(
                "max_payload_size",
                "8m",
                values::byte_size,
            )?),
            max_connections_per_client: raw.parse(
                "max_connections_per_client",
                "16",
                values::connection_count,
            )?,
            allowed_client_cidrs: raw.parse("allowed_client_cidrs", "", values::client_cidrs)?,
        })
    }
}

/// The ukey body that carries a payload of `payload` decrypted bytes:
/// base64 (4/3) plus 64 KiB for the U half, the tag and the JSON.
fn ukey_body_limit(payload: usize) -> usize {
    payload.saturating_mul(4) / 3 + 64 * 1024
}
