//! Prometheus metrics: what the agent has done, recorded where it happens,
//! and served in the Prometheus text format on `metrics_address` (plain
//! HTTP, `GET /metrics`) when that key is set.
//!
//! Recording is a few atomic operations (histograms take their own short
//! mutex); nothing is recorded on the TPM owner thread, so the owner never
//! waits for a scrape. Values that are read at scrape time (process memory
//! and descriptors, seconds since the last quote) are filled in by the
//! scrape itself.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Metric, Registry};

/// `endpoint` and `status` of an API request.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The route pattern, e.g. `/v{version}/quotes/integrity`.
    pub endpoint: String,
    /// The HTTP status answered.
    pub status: u16,
}

/// One `kind` label.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    /// What kind of thing was counted.
    pub kind: String,
}

/// `kind` and `outcome` labels.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// What kind of thing was counted.
    pub kind: String,
    /// How it ended.
    pub outcome: String,
}

/// Every metric the agent keeps.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// API requests by endpoint and status.
    pub requests: Family<RequestLabels, Counter>,
    /// Quotes by kind (`identity`, `integrity`, `push`) and outcome
    /// (`served`, `failed`).
    pub quotes: Family<OutcomeLabels, Counter>,
    /// TPM transaction latency by kind (`quote`, `activate_credential`, …).
    pub tpm_seconds: Family<KindLabel, Histogram>,
    /// TPM reconnects (the owner reopened the TPM).
    pub tpm_reconnects: Counter,
    /// 1 once registered and activated.
    pub registered: Gauge,
    /// Registration retries.
    pub registration_retries: Counter,
    /// Key halves received, by kind (`u`, `v`) and outcome (`accepted`,
    /// `refused`).
    pub key_halves: Family<OutcomeLabels, Counter>,
    /// K checks (`keys/verify` and the derivation), by outcome
    /// (`verified`, `rejected`).
    pub k_checks: Family<KindLabel, Counter>,
    /// Payload scripts run, by exit status (`0`, `1`, …, `signal`,
    /// `timeout`, `not_started`).
    pub payload_runs: Family<KindLabel, Counter>,
    /// Revocation notifications by verdict (`accepted`, `rejected`).
    pub revocations: Family<KindLabel, Counter>,
    /// Unix time of the last quote the verifier asked for (pull) or the
    /// last evidence it accepted (push); 0 before the first.
    last_attested_unix: AtomicU64,
    seconds_since_attested: Gauge<f64, AtomicU64>,
    rss_bytes: Gauge,
    open_fds: Gauge,
}

/// Registers `metric` under `name` and gives it back to be kept.
fn add<M: Metric + Clone>(registry: &mut Registry, name: &str, help: &str, metric: M) -> M {
    registry.register(name, help, metric.clone());
    metric
}

/// The process's metrics.
pub fn get() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::with_prefix("keylime_agent");
        let r = &mut registry;
        // 0.25 ms .. ~4 s: swtpm answers in milliseconds, hardware TPMs in
        // tens to hundreds.
        let tpm_buckets = || Histogram::new(exponential_buckets(0.000_25, 2.0, 15));
        Self {
            requests: add(r, "requests", "API requests by endpoint and status", Family::default()),
            quotes: add(
                r,
                "quotes",
                "Quotes by kind (identity, integrity, push) and outcome (served, failed)",
                Family::default(),
            ),
            tpm_seconds: add(
                r,
                "tpm_transaction_seconds",
                "TPM transaction latency by kind",
                Family::new_with_constructor(tpm_buckets),
            ),
            tpm_reconnects: add(
                r,
                "tpm_reconnects",
                "Times the TPM connection was reopened after a lost connection or a reset",
                Counter::default(),
            ),
            registered: add(
                r,
                "registered",
                "1 once registered with the registrar and activated",
                Gauge::default(),
            ),
            registration_retries: add(
                r,
                "registration_retries",
                "Registration attempts retried",
                Counter::default(),
            ),
            key_halves: add(
                r,
                "key_halves",
                "U and V key halves received, by kind and outcome",
                Family::default(),
            ),
            k_checks: add(
                r,
                "k_checks",
                "Derived keys K checked, by outcome (verified, rejected)",
                Family::default(),
            ),
            payload_runs: add(
                r,
                "payload_runs",
                "Payload scripts run, by exit status",
                Family::default(),
            ),
            revocations: add(
                r,
                "revocations",
                "Revocation notifications by verdict",
                Family::default(),
            ),
            last_attested_unix: AtomicU64::new(0),
            seconds_since_attested: add(
                r,
                "seconds_since_last_attestation",
                "Seconds since the verifier last asked for a quote (pull) or accepted evidence (push); -1 before the first",
                Gauge::default(),
            ),
            rss_bytes: add(
                r,
                "process_resident_memory_bytes",
                "Resident memory of the agent process",
                Gauge::default(),
            ),
            open_fds: add(
                r,
                "process_open_fds",
                "Open file descriptors of the agent process",
                Gauge::default(),
            ),
            registry,
        }
    }

    /// Counts one of `family`'s label `kind`.
    pub fn count(family: &Family<KindLabel, Counter>, kind: &str) {
        family.get_or_create(&KindLabel { kind: kind.into() }).inc();
    }

    /// Counts one of `family`'s `kind` with `outcome`.
    pub fn count_outcome(family: &Family<OutcomeLabels, Counter>, kind: &str, outcome: &str) {
        family
            .get_or_create(&OutcomeLabels {
                kind: kind.into(),
                outcome: outcome.into(),
            })
            .inc();
    }

    /// Records one TPM transaction of `kind` that took `took`.
    pub fn tpm_transaction(&self, kind: &str, took: Duration) {
        self.tpm_seconds
            .get_or_create(&KindLabel { kind: kind.into() })
            .observe(took.as_secs_f64());
    }

    /// Notes that the verifier just asked for a quote or accepted evidence.
    pub fn attested_now(&self) {
        self.last_attested_unix.store(unix_now(), Ordering::Relaxed);
    }

    /// The Prometheus text exposition, with the scrape-time values filled in.
    pub fn encode(&self) -> String {
        let last = self.last_attested_unix.load(Ordering::Relaxed);
        self.seconds_since_attested.set(if last == 0 {
            -1.0
        } else {
            unix_now().saturating_sub(last) as f64
        });
        let (rss, fds) = process_usage();
        self.rss_bytes.set(rss);
        self.open_fds.set(fds);
        let mut out = String::with_capacity(8 * 1024);
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Resident bytes and open descriptors of this process, from /proc.
fn process_usage() -> (i64, i64) {
    let rss_kib = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<i64>().ok())
        })
        .unwrap_or(0);
    let fds = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as i64);
    (rss_kib * 1024, fds)
}

/// Serves `GET /metrics` on `addr` (plain HTTP, one worker thread) until
/// the returned server is stopped. Anything else gets a 404; request heads
/// must arrive within 5 s.
pub fn serve(addr: SocketAddr) -> std::io::Result<actix_web::dev::Server> {
    use actix_web::{web, App, HttpResponse, HttpServer};
    let server = HttpServer::new(|| {
        App::new()
            .route(
                "/metrics",
                web::get().to(|| async {
                    HttpResponse::Ok()
                        .content_type("text/plain; version=0.0.4; charset=utf-8")
                        .body(get().encode())
                }),
            )
            .default_service(web::to(|| async {
                HttpResponse::NotFound()
                    .content_type("text/plain")
                    .body("only GET /metrics is served here\n")
            }))
    })
    .workers(1)
    .disable_signals()
    .max_connections(64)
    .client_request_timeout(Duration::from_secs(5))
    .shutdown_timeout(1)
    .bind(addr)?;
    Ok(server.run())
}
