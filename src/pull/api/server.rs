//! The HTTP server under the API: actix-http over OpenSSL (or plain TCP)
//! on actix-server, with a connection gate in front of it.
//!
//! The gate admits at most `max_connections` connections at once. One more
//! is accepted and closed at once, before any TLS byte is read, so a client
//! past the limit learns within a round trip that it was refused, and the
//! agent's descriptors stay bounded by the limit instead of by the kernel.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr, TcpListener, ToSocketAddrs};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_http::{HttpService, TlsAcceptorConfig};
use actix_server::Server;
use actix_service::{
    map_config, IntoServiceFactory, Service, ServiceFactory, ServiceFactoryExt as _,
};
use actix_web::dev::{AppConfig, Response};
use actix_web::{web, App, Error};
use futures_util::future::LocalBoxFuture;
use openssl::ssl::SslAcceptor;
use tokio::net::TcpStream;
use tokio::sync::Notify;

use super::refusals::RefusalLog;
use super::state::ApiState;
use crate::config::ClientCidr;

/// How the server treats its clients.
#[derive(Debug, Clone)]
pub struct ServerLimits {
    /// Worker threads.
    pub workers: usize,
    /// Connections served at once; more are closed on accept.
    pub max_connections: usize,
    /// Connections one client address may hold at once.
    pub max_per_client: usize,
    /// Client addresses served; empty = any.
    pub allowed: Vec<ClientCidr>,
    /// Time for a request's head to arrive.
    pub head_timeout: Duration,
    /// Time in-flight requests get at shutdown, in seconds.
    pub shutdown_grace_secs: u64,
}

/// Time for a client's TLS handshake: a connection that sends nothing is
/// closed after it.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(3);

/// Decides, at accept, which connections are served: only addresses in
/// the allow-list, at most `per_client` per address and `max` in all.
/// When all places are taken, an address holding fewer connections than
/// the address holding the most still gets one: the oldest connection of
/// the biggest holder is closed for it. So one client (or a few) holding
/// many sockets never locks out a verifier that holds none.
#[derive(Debug, Clone)]
struct Gate {
    places: Arc<Mutex<Places>>,
    max: usize,
    per_client: usize,
    allowed: Arc<Vec<ClientCidr>>,
    refused: Arc<RefusalLog>,
}

/// The connections open, by client address, oldest first.
#[derive(Debug, Default)]
struct Places {
    by_client: HashMap<IpAddr, VecDeque<(u64, Arc<Notify>)>>,
    total: usize,
    next_id: u64,
}

/// One admitted connection: its place is given back when it drops;
/// `evicted` fires when the gate closed it for another client.
struct Pass {
    places: Arc<Mutex<Places>>,
    client: IpAddr,
    id: u64,
    evicted: Arc<Notify>,
}

impl Drop for Pass {
    fn drop(&mut self) {
        let mut places = lock(&self.places);
        let Some(queue) = places.by_client.get_mut(&self.client) else {
            return;
        };
        if let Some(at) = queue.iter().position(|(id, _)| *id == self.id) {
            queue.remove(at);
            if queue.is_empty() {
                places.by_client.remove(&self.client);
            }
            places.total -= 1;
        }
    }
}

/// Who holds a connection: the IPv4 address, or the /64 network of an
/// IPv6 address (one host has a whole /64 to pick addresses from).
fn holder(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(std::net::Ipv6Addr::from(
                u128::from(v6) & !((1u128 << 64) - 1),
            )),
        },
        v4 => v4,
    }
}

fn lock(places: &Mutex<Places>) -> std::sync::MutexGuard<'_, Places> {
    places
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Gate {
    fn new(limits: &ServerLimits) -> Self {
        Self {
            places: Arc::default(),
            max: limits.max_connections,
            per_client: limits.max_per_client,
            allowed: Arc::new(limits.allowed.clone()),
            refused: Arc::new(RefusalLog::new("connection(s)")),
        }
    }

    /// A pass for a connection from `client`, or `None` (and the refusal
    /// counted).
    fn admit(&self, client: IpAddr) -> Option<Pass> {
        match self.place_for(client) {
            Ok(pass) => Some(pass),
            Err(kind) => {
                if let Some(line) = self.refused.count(kind, Instant::now()) {
                    tracing::warn!("{line}");
                }
                None
            }
        }
    }

    fn place_for(&self, client: IpAddr) -> Result<Pass, String> {
        if !self.allowed.is_empty() && !self.allowed.iter().any(|r| r.contains(client)) {
            return Err("from an address outside allowed_client_cidrs".into());
        }
        let client = holder(client);
        let mut places = lock(&self.places);
        let held = places.by_client.get(&client).map_or(0, VecDeque::len);
        if held >= self.per_client {
            return Err(format!(
                "over max_connections_per_client = {}",
                self.per_client
            ));
        }
        if places.total >= self.max {
            // The address holding the most; among equals, the one whose
            // oldest connection is oldest (a verifier's poll is young).
            let biggest = places
                .by_client
                .iter()
                .filter(|(_, queue)| queue.len() > held)
                .max_by_key(|(_, queue)| {
                    (
                        queue.len(),
                        std::cmp::Reverse(queue.front().map_or(u64::MAX, |(id, _)| *id)),
                    )
                })
                .map(|(ip, _)| *ip);
            let Some(biggest) = biggest else {
                return Err(format!("over max_connections = {}", self.max));
            };
            let mut freed = false;
            if let Some(queue) = places.by_client.get_mut(&biggest) {
                if let Some((_, evicted)) = queue.pop_front() {
                    evicted.notify_one();
                    freed = true;
                }
                if queue.is_empty() {
                    places.by_client.remove(&biggest);
                }
            }
            if freed {
                places.total -= 1;
            }
        }
        let id = places.next_id;
        places.next_id += 1;
        let evicted = Arc::new(Notify::new());
        places
            .by_client
            .entry(client)
            .or_default()
            .push_back((id, evicted.clone()));
        places.total += 1;
        Ok(Pass {
            places: self.places.clone(),
            client,
            id,
            evicted,
        })
    }
}

/// The HTTP/1 service over the API app for one listener, not yet bound to
/// a transport (`.tcp()` or `.openssl(..)` follows).
macro_rules! http_service {
    ($state:expr, $local:expr, $head_timeout:expr) => {{
        let state = $state.clone();
        let app = App::new()
            .wrap(actix_web::middleware::from_fn(
                super::middleware::refuse_unframed,
            ))
            .wrap(actix_web::middleware::from_fn(
                super::middleware::count_refusals,
            ))
            .configure(super::routes::configure(state));
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
    let gate = Gate::new(limits);
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
            Some(acceptor) => builder.listen(name, listener, move || Gated {
                gate: gate.clone(),
                inner: http_service!(state, local, head_timeout).openssl_with_config(
                    acceptor.clone(),
                    TlsAcceptorConfig::default().handshake_timeout(TLS_HANDSHAKE_TIMEOUT),
                ),
            })?,
            None => builder.listen(name, listener, move || Gated {
                gate: gate.clone(),
                inner: http_service!(state, local, head_timeout).tcp(),
            })?,
        };
        bound.push(local);
    }
    Ok((builder.run(), bound))
}

/// `inner` behind the gate: a connection the gate refuses is closed at
/// once; one it evicts later is closed then.
struct Gated<SF> {
    gate: Gate,
    inner: SF,
}

impl<SF> ServiceFactory<TcpStream> for Gated<SF>
where
    SF: ServiceFactory<TcpStream, Config = (), Response = ()>,
    SF::Service: 'static,
    SF::Future: 'static,
    SF::Error: 'static,
    <SF::Service as Service<TcpStream>>::Future: 'static,
{
    type Response = ();
    type Error = SF::Error;
    type Config = ();
    type Service = GatedService<SF::Service>;
    type InitError = SF::InitError;
    type Future = LocalBoxFuture<'static, Result<Self::Service, Self::InitError>>;

    fn new_service(&self, (): ()) -> Self::Future {
        let (gate, inner) = (self.gate.clone(), self.inner.new_service(()));
        Box::pin(async move {
            Ok(GatedService {
                gate,
                inner: inner.await?,
            })
        })
    }
}

/// One worker's gated service.
struct GatedService<S> {
    gate: Gate,
    inner: S,
}

impl<S> Service<TcpStream> for GatedService<S>
where
    S: Service<TcpStream, Response = ()>,
    S::Future: 'static,
    S::Error: 'static,
{
    type Response = ();
    type Error = S::Error;
    type Future = LocalBoxFuture<'static, Result<(), S::Error>>;

    /// Always ready: the gate decides who is served. (Asking the TLS
    /// acceptor would stop the worker from accepting at all once its
    /// count of handshakes in progress is full, whoever holds them.)
    fn poll_ready(
        &self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&self, stream: TcpStream) -> Self::Future {
        let client = stream
            .peer_addr()
            .map_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), |a| a.ip());
        // Refused: the stream is dropped here, which closes it.
        let Some(pass) = self.gate.admit(client) else {
            return Box::pin(std::future::ready(Ok(())));
        };
        let connection = self.inner.call(stream);
        Box::pin(async move {
            let evicted = pass.evicted.clone();
            let served = tokio::select! {
                served = connection => served,
                () = evicted.notified() => Ok(()),
            };
            drop(pass);
            served
        })
    }
}

#[cfg(test)]
mod tests;
