//! The HTTP server under the API: actix-http over OpenSSL (or plain TCP)
//! on actix-server, with a connection gate in front of it.
//!
//! The gate admits at most `max_connections` connections at once. One more
//! is accepted and closed at once, before any TLS byte is read, so a client
//! past the limit learns within a round trip that it was refused, and the
//! agent's descriptors stay bounded by the limit instead of by the kernel.

use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_http::HttpService;
use actix_server::Server;
use actix_service::{
    apply_fn_factory, map_config, IntoServiceFactory, Service, ServiceFactory,
    ServiceFactoryExt as _,
};
use actix_web::dev::{AppConfig, Response};
use actix_web::{web, App, Error};
use openssl::ssl::SslAcceptor;
use tokio::net::TcpStream;

use super::refusals::RefusalLog;
use super::ApiState;

/// How the server treats its clients.
#[derive(Debug, Clone)]
pub struct ServerLimits {
    /// Worker threads.
    pub workers: usize,
    /// Connections served at once; more are closed on accept.
    pub max_connections: usize,
    /// Time for a request's head to arrive.
    pub head_timeout: Duration,
    /// Time in-flight requests get at shutdown, in seconds.
    pub shutdown_grace_secs: u64,
}

/// Counts open connections across all workers.
#[derive(Debug, Clone)]
struct Gate {
    open: Arc<AtomicUsize>,
    max: usize,
    refused: Arc<RefusalLog>,
}

/// One admitted connection; leaving the gate when dropped.
struct Pass(Arc<AtomicUsize>);

impl Drop for Pass {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Gate {
    fn new(max: usize) -> Self {
        Self {
            open: Arc::new(AtomicUsize::new(0)),
            max,
            refused: Arc::new(RefusalLog::new("connection(s)")),
        }
    }

    /// A pass when fewer than `max` connections are open; `None` (and the
    /// refusal counted) otherwise.
    fn admit(&self) -> Option<Pass> {
        if self.open.fetch_add(1, Ordering::AcqRel) < self.max {
            return Some(Pass(self.open.clone()));
        }
        self.open.fetch_sub(1, Ordering::AcqRel);
        let kind = format!("over max_connections = {}", self.max);
        if let Some(line) = self.refused.count(kind, Instant::now()) {
            tracing::warn!("{line}");
        }
        None
    }
}

/// The HTTP/1 service over the API app for one listener, not yet bound to
/// a transport (`.tcp()` or `.openssl(..)` follows).
macro_rules! http_service {
    ($state:expr, $local:expr, $head_timeout:expr) => {{
        let state = $state.clone();
        let app = App::new()
            .wrap(actix_web::middleware::from_fn(super::refuse_unframed))
            .wrap(actix_web::middleware::from_fn(super::count_refusals))
            .configure(super::configure(state));
        HttpService::build()
            // The verifier opens a fresh connection per poll: no Nagle delay.
            .tcp_nodelay(true)
            .client_request_timeout($head_timeout)
            // After a response that closes the connection, a client that
            // keeps it open (still sending a refused body) is cut off soon.
            .client_disconnect_timeout(Duration::from_secs(1))
            .local_addr($local)
            .finish(map_config(
                app.into_factory()
                    .map_err(|e: Error| Response::from(e.error_response())),
                |_| AppConfig::default(),
            ))
    }};
}

/// Binds every address `addr` resolves to and builds the API server over
/// `state`, over TLS when `tls` is given. Returns the server (not yet
/// running) and the bound addresses.
pub fn bind(
    addr: (&str, u16),
    tls: Option<SslAcceptor>,
    limits: &ServerLimits,
    state: web::Data<ApiState>,
) -> std::io::Result<(Server, Vec<SocketAddr>)> {
    let gate = Gate::new(limits.max_connections);
    let head_timeout = limits.head_timeout;
    let mut builder = Server::build()
        .workers(limits.workers)
        .disable_signals()
        .shutdown_timeout(limits.shutdown_grace_secs)
        // The gate decides; the workers' own limit only backs it up.
        .max_concurrent_connections(limits.max_connections.saturating_add(16));
    let mut bound = Vec::new();
    for addr in addr.to_socket_addrs()? {
        let listener = TcpListener::bind(addr)?;
        let local = listener.local_addr()?;
        let (gate, state) = (gate.clone(), state.clone());
        let name = format!("api-{local}");
        builder = match tls.clone() {
            Some(acceptor) => builder.listen(name, listener, move || {
                gated(
                    gate.clone(),
                    http_service!(state, local, head_timeout).openssl(acceptor.clone()),
                )
            })?,
            None => builder.listen(name, listener, move || {
                gated(
                    gate.clone(),
                    http_service!(state, local, head_timeout).tcp(),
                )
            })?,
        };
        bound.push(local);
    }
    Ok((builder.run(), bound))
}

/// `inner` behind the gate: a connection past the limit is closed at once.
fn gated<SF>(
    gate: Gate,
    inner: SF,
) -> impl ServiceFactory<
    TcpStream,
    Config = (),
    Response = (),
    Error = SF::Error,
    InitError = SF::InitError,
>
where
    SF: ServiceFactory<TcpStream, Config = (), Response = ()>,
    SF::Service: 'static,
    <SF::Service as Service<TcpStream>>::Future: 'static,
{
    apply_fn_factory(inner, move |stream: TcpStream, service: &SF::Service| {
        // Refused: the stream is dropped with the closure, which closes it.
        let admitted = gate.admit().map(|pass| (pass, service.call(stream)));
        async move {
            match admitted {
                Some((pass, connection)) => {
                    let served = connection.await;
                    drop(pass);
                    served
                }
                None => Ok(()),
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gate_admits_up_to_the_limit_and_frees_a_place_when_a_pass_drops() {
        let gate = Gate::new(2);
        let a = gate.admit().expect("first");
        let _b = gate.admit().expect("second");
        assert!(gate.admit().is_none(), "a third is refused");
        assert_eq!(
            gate.open.load(Ordering::Acquire),
            2,
            "a refusal leaves no count"
        );
        drop(a);
        assert!(gate.admit().is_some(), "a place is free again");
    }
}
