//! Who the agent is: its id (the `uuid` key and its modes), its mTLS key
//! and self-signed certificate, and the NK ("payload key") that the tenant
//! and verifier encrypt the U and V key halves to.

mod agent_id;
mod error;
mod key_file;
mod mtls;
mod nk;

pub use agent_id::{AgentId, AgentIdSource, GENERATED_ID_FILE};
pub use error::IdentityError;
pub use mtls::MtlsIdentity;
pub use nk::Nk;
