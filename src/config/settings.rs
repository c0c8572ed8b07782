//! The one table of every setting (name, default, meaning), and the reader that looks values up
//! with the table's defaults. The table drives parsing, the README's configuration list (a test
//! checks the README lists each one) and error messages; [`super::Config::from_lookup`] validates.

use std::time::Duration;

use super::ConfigError;

/// One environment variable.
#[derive(Debug)]
pub struct Setting {
    /// The variable's name.
    pub name: &'static str,
    /// Its default, as text (empty: unset).
    pub default: &'static str,
    /// What it means.
    pub doc: &'static str,
}

/// Every setting, in README order.
pub const SETTINGS: &[Setting] = &[
    Setting {
        name: "WEBHOOK_SERVICE_PORT",
        default: "3335",
        doc: "Port of the management and monitoring API.",
    },
    Setting {
        name: "WEBHOOK_SERVICE_HOST",
        default: "0.0.0.0",
        doc: "Address the API listens on.",
    },
    Setting {
        name: "REDIS_URL",
        default: "redis://localhost:6379",
        doc: "Redis to read events from and keep state in: `redis://[user:password@]host:port[/db]`, `rediss://…` over TLS, or the master of a Sentinel set, `redis+sentinel://[user:password@]host1:26379,host2:26379/<master>[/db]` (`rediss+sentinel://…` over TLS).",
    },
    Setting {
        name: "HUB_REDIS_URL",
        default: "",
        doc: "Read when `REDIS_URL` is unset (the original's name).",
    },
    Setting {
        name: "REDIS_TLS_CA_FILE",
        default: "",
        doc: "PEM file of the CA certificates that signed the Redis server's certificate, trusted instead of the built-in Mozilla roots (TLS URLs only).",
    },
    Setting {
        name: "REDIS_TLS_CERT_FILE",
        default: "",
        doc: "PEM client certificate (chain) shown to Redis for mutual TLS, with `REDIS_TLS_KEY_FILE`.",
    },
    Setting {
        name: "REDIS_TLS_KEY_FILE",
        default: "",
        doc: "PEM private key of `REDIS_TLS_CERT_FILE`.",
    },
    Setting {
        name: "REDIS_TLS_UNSAFE_SKIP_VERIFY",
        default: "false",
        doc: "UNSAFE, for test setups only: `true` accepts any certificate from Redis, unchecked, so anyone on the network path can read and change the traffic.",
    },
    Setting {
        name: "REDIS_SENTINEL_USERNAME",
        default: "",
        doc: "User for the sentinels of a Sentinel URL, when they have ACL users of their own (the URL's user is the master's).",
    },
    Setting {
        name: "REDIS_SENTINEL_PASSWORD",
        default: "",
        doc: "Password for the sentinels of a Sentinel URL (their `requirepass`, or the password of `REDIS_SENTINEL_USERNAME`).",
    },
    Setting {
        name: "CORS_ORIGINS",
        default: "*",
        doc: "Comma-separated exact origins allowed to call the API, or `*`.",
    },
    Setting {
        name: "NODE_ENV",
        default: "",
        doc: "Accepted for compatibility; only logged.",
    },
    Setting {
        name: "WEBHOOK_DELIVERY_THREADS",
        default: "8",
        doc: "Threads making first delivery attempts (1-256).",
    },
    Setting {
        name: "WEBHOOK_RETRY_THREADS",
        default: "2",
        doc: "Threads making retries, apart from first attempts (1-256).",
    },
    Setting {
        name: "WEBHOOK_SLOW_THREADS",
        default: "16",
        doc: "Threads for endpoints whose attempts take long (the slow lane), apart from the delivery and retry threads: that many slow or hanging endpoints get attempts at once without taking a thread from the others (1-1024).",
    },
    Setting {
        name: "WEBHOOK_SLOW_ATTEMPT_MS",
        default: "250",
        doc: "An attempt that takes this long, answered or not, makes its endpoint slow: its attempts move to the slow lane, one at a time, one more per answer (10-60000).",
    },
    Setting {
        name: "WEBHOOK_MAX_IN_FLIGHT_PER_ENDPOINT",
        default: "0",
        doc: "Most attempts one webhook may have in flight; 0 means half the delivery threads. Halved on each timeout or connection failure, grown back by one per answer.",
    },
    Setting {
        name: "WEBHOOK_QUEUE_CAPACITY",
        default: "10000",
        doc: "Deliveries held in memory waiting for a delivery thread, and again parked behind busy endpoints; beyond that they wait in Redis (100-1000000).",
    },
    Setting {
        name: "WEBHOOK_TIMEOUT_MS",
        default: "30000",
        doc: "Time limit of one attempt, connect to last response byte (100-300000).",
    },
    Setting {
        name: "WEBHOOK_ALLOWED_NETWORKS",
        default: "",
        doc: "Comma-separated CIDRs exempt from the private-address block, e.g. `127.0.0.0/8`. Empty: nothing private is allowed.",
    },
    Setting {
        name: "WEBHOOK_DEDUPE_WINDOW_MS",
        default: "600000",
        doc: "A source event seen again within this window is not delivered again (0 turns it off).",
    },
    Setting {
        name: "WEBHOOK_PROGRESS_THROTTLE_MS",
        default: "1000",
        doc: "At most one `job.progress` per job per webhook in this period; the last of a burst is always sent.",
    },
    Setting {
        name: "WEBHOOK_MAX_RETRY_AFTER_MS",
        default: "3600000",
        doc: "Cap on the delay a `Retry-After` header can ask for.",
    },
    Setting {
        name: "WEBHOOK_REGISTRY_REFRESH_MS",
        default: "2000",
        doc: "How often `webhooks:registry` is re-read for changes made by other processes (100-600000).",
    },
    Setting {
        name: "WEBHOOK_API_TOKEN",
        default: "",
        doc: "When set, every API route except `GET /health`, `/openapi.json` and the capture URLs needs `Authorization: Bearer <token>`.",
    },
    Setting {
        name: "WEBHOOK_MAX_BODY_BYTES",
        default: "1048576",
        doc: "Largest API request body; larger ones get 413 (1024-104857600).",
    },
    Setting {
        name: "WEBHOOK_API_MAX_CONNECTIONS",
        default: "256",
        doc: "Most API connections open at once, one small thread each (8-4096); fewer, with a warning, if the open-file limit leaves no room for them. At the limit, a new connection first evicts an idle or slow one; only when every connection has a request in a handler is it refused with 503.",
    },
    Setting {
        name: "WEBHOOK_API_IDLE_TIMEOUT_MS",
        default: "10000",
        doc: "An API connection that sends nothing for this long is closed: between requests quietly, within one with 408 (100-600000).",
    },
    Setting {
        name: "WEBHOOK_API_HEAD_TIMEOUT_MS",
        default: "5000",
        doc: "A request head (request line and headers) must arrive whole within this of its first byte, else 408 and the connection is closed (100-600000).",
    },
    Setting {
        name: "WEBHOOK_API_BODY_TIMEOUT_MS",
        default: "30000",
        doc: "A request body must arrive whole within this of its head, and a response must be taken by the client within this, else the connection is closed (100-600000).",
    },
    Setting {
        name: "WEBHOOK_CAPTURE_MAX_BYTES",
        default: "67108864",
        doc: "Memory for the requests captured by monitor sessions, all sessions together; beyond it the oldest captures go. Each test receiver keeps at most a hundredth of it in Redis (1048576-17179869184).",
    },
    Setting {
        name: "WEBHOOK_SERVICE_URL",
        default: "",
        doc: "Public base URL of this service, for test-receiver URLs. Default: `http://localhost:<port>`.",
    },
    Setting {
        name: "NEXT_PUBLIC_APP_URL",
        default: "http://localhost:3000",
        doc: "Base URL of the EMP monitor UI, for test-receiver `view_url`s.",
    },
    Setting {
        name: "WEBHOOK_INSTANCE_ID",
        default: "",
        doc: "This instance's name among several on one Redis. Default: the hostname and the process id.",
    },
    Setting {
        name: "WEBHOOK_INSTANCE_TTL_MS",
        default: "10000",
        doc: "An instance silent for this long is presumed dead and its deliveries are taken over (1000-600000).",
    },
    Setting {
        name: "WEBHOOK_SHUTDOWN_TIMEOUT_MS",
        default: "10000",
        doc: "On SIGTERM or SIGINT, how long attempts in flight may finish before the rest is handed back (0-600000).",
    },
    Setting {
        name: "WEBHOOK_EVENT_STREAM",
        default: "",
        doc: "A Redis Stream to read events from as well, with a consumer group (entries: `channel`, `message`). Empty: pub/sub only.",
    },
    Setting {
        name: "WEBHOOK_STREAM_GROUP",
        default: "webhook-service",
        doc: "The consumer group on `WEBHOOK_EVENT_STREAM`.",
    },
    Setting {
        name: "WEBHOOK_DISCONNECT_AFTER",
        default: "10",
        doc: "Failed deliveries in a row after which a non-static webhook is disconnected (1-10000).",
    },
    Setting {
        name: "WEBHOOK_HALF_OPEN_AFTER_MS",
        default: "300000",
        doc: "A disconnected webhook gets deliveries again (a probe) this long after its last failure; a success reconnects it (1000-86400000).",
    },
    Setting {
        name: "WEBHOOK_DEAD_LETTER_MAX",
        default: "100000",
        doc: "Dead letters kept, newest first (100-10000000).",
    },
    Setting {
        name: "WEBHOOK_DEAD_LETTER_MAX_AGE_MS",
        default: "2592000000",
        doc: "Dead letters older than this are dropped (60000-31536000000).",
    },
    Setting {
        name: "RUST_LOG",
        default: "info",
        doc: "Log level (error, warn, info, debug, trace), optionally per module: `info,webhook_service::delivery=debug`.",
    },
    Setting {
        name: "LOG_FORMAT",
        default: "text",
        doc: "`text` for human-readable lines, `json` for one JSON object per line.",
    },
];

/// Reads raw values: the variable when set and not blank, else the table's default.
pub(super) struct Reader<F> {
    /// Where variables come from (the environment, or a test's map).
    pub(super) lookup: F,
}

impl<F: Fn(&str) -> Option<String>> Reader<F> {
    /// The raw value: the variable if set and not blank, else the table's default.
    pub(super) fn raw(&self, name: &'static str) -> String {
        match (self.lookup)(name) {
            Some(v) if !v.trim().is_empty() => v.trim().to_string(),
            _ => SETTINGS
                .iter()
                .find(|s| s.name == name)
                .map(|s| s.default.to_string())
                .unwrap_or_default(),
        }
    }

    pub(super) fn number(
        &self,
        name: &'static str,
        min: u64,
        max: u64,
    ) -> Result<u64, ConfigError> {
        let raw = self.raw(name);
        raw.parse::<u64>()
            .ok()
            .filter(|n| (min..=max).contains(n))
            .ok_or_else(|| ConfigError {
                variable: name,
                value: raw.clone(),
                rule: format!("must be a whole number from {min} to {max}"),
            })
    }

    pub(super) fn millis(
        &self,
        name: &'static str,
        min: u64,
        max: u64,
    ) -> Result<Duration, ConfigError> {
        self.number(name, min, max).map(Duration::from_millis)
    }
}
