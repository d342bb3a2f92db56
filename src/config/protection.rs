//! Settings that lower the agent's protection, said loudly: at every start
//! (one WARN line each) and by `check` (a WARN finding each). The same list
//! serves both, so the two never disagree.

use super::settings::Config;

/// One setting that lowers protection: the key to look at, what it opens
/// up, and what to set instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lowered {
    /// The config key.
    pub key: &'static str,
    /// What the setting lets happen.
    pub what: String,
    /// The safer setting.
    pub fix: &'static str,
}

impl Config {
    /// What in this config lowers protection, for the pull front end
    /// (`pull`, which serves the API and runs payloads) or the push one;
    /// `root` says whether the agent runs (or will run) as root.
    pub fn lowered_protection(&self, pull: bool, root: bool) -> Vec<Lowered> {
        let mut out = Vec::new();
        if pull
            && !self.enable_agent_mtls
            && self.payload.enable_insecure_payload
            && self.payload.dangerous_allow_unauthenticated
        {
            out.push(Lowered {
                key: "dangerous_allow_unauthenticated_payloads",
                what: format!(
                    "DANGEROUS: enable_agent_mtls = false with enable_insecure_payload = true: anyone who \
                     reaches port {} can deliver a payload whose script the agent runs",
                    self.port
                ),
                fix: "set enable_agent_mtls = true (or enable_insecure_payload = false)",
            });
        }
        if pull && root && self.run_as.is_none() {
            out.push(Lowered {
                key: "run_as",
                what: "run_as is empty and the agent runs as root: payload scripts and revocation \
                       actions run as root (uid 0)"
                    .into(),
                fix: "set run_as = \"keylime:tss\" (the units start with the capabilities the switch needs)",
            });
        }
        if let Some(addr) = self.observe.metrics_address {
            if !addr.ip().is_loopback() {
                out.push(Lowered {
                    key: "metrics_address",
                    what: format!(
                        "metrics_address = {addr} is not a loopback address: anyone who reaches it \
                         reads the agent's metrics (plain HTTP, no authentication)"
                    ),
                    fix: "listen on 127.0.0.1 (or [::1]) and scrape through a local proxy",
                });
            }
        }
        out
    }
}
