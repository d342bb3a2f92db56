//! HTTP only: the routes of API versions 2.1–2.6, typed parameters, the
//! JSON envelope and the one error mapping. No TPM, file or crypto code.

mod body;
mod error;
mod handlers;
pub mod integrity_body;
mod key_work;
mod keys;
mod middleware;
mod params;
mod refusals;
mod routes;
mod server;
mod state;

pub use body::BodyLimits;
pub use error::ApiError;
pub use key_work::KeyWork;
pub use server::{bind, ServerLimits};
pub use state::{AgentInfo, ApiState};
