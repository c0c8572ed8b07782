//! Configuration: read once from the environment into a typed, validated [`Config`].
//!
//! [`SETTINGS`] (in `settings.rs`) is the one table of every variable (name, default, meaning); it drives parsing,
//! the README's configuration table (a test checks the README lists each one) and error messages.
//! Nothing else in the crate reads `std::env`.

mod files;
mod settings;
pub mod target;

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use crate::net::Cidr;
pub(crate) use files::{MAX_IDLE_CONNECTIONS, OTHER_FILES, open_file_limit};
use settings::Reader;
pub use settings::{SETTINGS, Setting};
use target::{RedisOptions, Target};

/// The validated configuration.
#[derive(Clone)]
pub struct Config {
    /// API port.
    pub(crate) port: u16,
    /// API listen address.
    pub(crate) host: IpAddr,
    /// Redis URL.
    pub(crate) redis_url: String,
    /// The variable the Redis URL came from (`REDIS_URL` or `HUB_REDIS_URL`).
    pub(crate) redis_url_variable: &'static str,
    /// TLS and Sentinel settings.
    pub(crate) redis: RedisOptions,
    /// Allowed CORS origins; `["*"]` allows any.
    pub(crate) cors_origins: Vec<String>,
    /// `NODE_ENV`, if set.
    pub(crate) node_env: Option<String>,
    /// First-attempt delivery threads.
    pub(crate) delivery_threads: usize,
    /// Retry delivery threads.
    pub(crate) retry_threads: usize,
    /// Slow-lane threads.
    pub(crate) slow_threads: usize,
    /// An attempt this long makes its endpoint slow.
    pub(crate) slow_attempt: Duration,
    /// Most attempts in flight per webhook.
    pub(crate) max_in_flight_per_endpoint: usize,
    /// Capacity of the delivery queue.
    pub(crate) queue_capacity: usize,
    /// Time limit of one attempt.
    pub(crate) timeout: Duration,
    /// Networks exempt from the SSRF block.
    pub(crate) allowed_networks: Vec<Cidr>,
    /// Duplicate-suppression window.
    pub(crate) dedupe_window: Duration,
    /// Progress throttle period.
    pub(crate) progress_throttle: Duration,
    /// Cap on `Retry-After`.
    pub(crate) max_retry_after: Duration,
    /// Registry re-read period.
    pub(crate) registry_refresh: Duration,
    /// Bearer token of the API, if any.
    pub(crate) api_token: Option<String>,
    /// Largest API request body.
    pub(crate) max_body_bytes: usize,
    /// Most API connections at once.
    pub(crate) api_max_connections: usize,
    /// Idle API connections are closed after this.
    pub(crate) api_idle_timeout: Duration,
    /// Deadline of a whole request head, from its first byte.
    pub(crate) api_head_timeout: Duration,
    /// Deadline of a whole request body, from its head; and of a whole response.
    pub(crate) api_body_timeout: Duration,
    /// Memory for captured requests (monitor sessions; a hundredth per test receiver).
    pub(crate) capture_max_bytes: usize,
    /// Public base URL of the service.
    pub(crate) public_url: String,
    /// Base URL of the monitor UI.
    pub(crate) app_url: String,
    /// This instance's id.
    pub(crate) instance_id: String,
    /// Heartbeat lifetime.
    pub(crate) instance_ttl: Duration,
    /// Grace period on SIGTERM/SIGINT.
    pub(crate) shutdown_timeout: Duration,
    /// Stream to read events from, if any.
    pub(crate) event_stream: Option<String>,
    /// Consumer group on the stream.
    pub(crate) stream_group: String,
    /// Final failures in a row that disconnect a webhook.
    pub(crate) disconnect_after: u64,
    /// Quiet period of a disconnected webhook.
    pub(crate) half_open_after: Duration,
    /// Dead letters kept.
    pub(crate) dead_letter_max: u64,
    /// Oldest dead letter kept.
    pub(crate) dead_letter_max_age: Duration,
    /// Log filter.
    pub log_filter: String,
    /// Log lines as JSON.
    pub log_json: bool,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("port", &self.port)
            .field("host", &self.host)
            .field("redis_url", &redact_url(&self.redis_url))
            .field("redis", &self.redis)
            .field("cors_origins", &self.cors_origins)
            .field("delivery_threads", &self.delivery_threads)
            .field("retry_threads", &self.retry_threads)
            .field("slow_threads", &self.slow_threads)
            .field("slow_attempt", &self.slow_attempt)
            .field(
                "max_in_flight_per_endpoint",
                &self.max_in_flight_per_endpoint,
            )
            .field("queue_capacity", &self.queue_capacity)
            .field("timeout", &self.timeout)
            .field("allowed_networks", &self.allowed_networks)
            .field("dedupe_window", &self.dedupe_window)
            .field("api_token", &self.api_token.as_ref().map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

/// A setting whose value breaks its rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The variable.
    pub(crate) variable: &'static str,
    /// The value given.
    pub(crate) value: String,
    /// The rule it breaks.
    pub(crate) rule: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid {}={:?}: {}",
            self.variable, self.value, self.rule
        )
    }
}

impl std::error::Error for ConfigError {}

/// `<hostname>-<pid>`: unique per process on a machine, readable in logs.
fn default_instance_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".to_string());
    format!("{host}-{}", std::process::id())
}

/// The Redis settings other than the URL (checked with it by [`Target::parse`]).
fn redis_options<F: Fn(&str) -> Option<String>>(
    r: &Reader<F>,
) -> Result<RedisOptions, ConfigError> {
    let optional = |name: &'static str| Some(r.raw(name)).filter(|v| !v.is_empty());
    let skip = r.raw("REDIS_TLS_UNSAFE_SKIP_VERIFY");
    let tls_unsafe_skip_verify = match skip.as_str() {
        "true" => true,
        "false" => false,
        _ => {
            return Err(ConfigError {
                variable: "REDIS_TLS_UNSAFE_SKIP_VERIFY",
                value: skip,
                rule: "must be `true` or `false`".into(),
            });
        }
    };
    Ok(RedisOptions {
        tls_ca_file: optional("REDIS_TLS_CA_FILE"),
        tls_cert_file: optional("REDIS_TLS_CERT_FILE"),
        tls_key_file: optional("REDIS_TLS_KEY_FILE"),
        tls_unsafe_skip_verify,
        sentinel_username: optional("REDIS_SENTINEL_USERNAME"),
        sentinel_password: optional("REDIS_SENTINEL_PASSWORD"),
    })
}

/// `REDIS_URL`, else `HUB_REDIS_URL` (the original's name), else the default; with the variable
/// it came from.
fn redis_url<F: Fn(&str) -> Option<String>>(r: &Reader<F>) -> (&'static str, String) {
    match (r.lookup)("REDIS_URL").filter(|v| !v.trim().is_empty()) {
        Some(url) => ("REDIS_URL", url.trim().to_string()),
        None => match (r.lookup)("HUB_REDIS_URL").filter(|v| !v.trim().is_empty()) {
            Some(url) => ("HUB_REDIS_URL", url.trim().to_string()),
            None => ("REDIS_URL", r.raw("REDIS_URL")),
        },
    }
}

/// Checks the Redis URL with its settings (files readable, URL well formed), naming the setting
/// at fault without showing a password.
fn check_redis<F: Fn(&str) -> Option<String>>(
    r: &Reader<F>,
    (variable, url): &(&'static str, String),
    options: &RedisOptions,
) -> Result<(), ConfigError> {
    let Err(e) = Target::parse(url, variable, options) else {
        return Ok(());
    };
    let value = match e.variable {
        v if v == *variable => redact_url(url),
        v if v.contains("PASSWORD") => "<redacted>".into(),
        v => r.raw(v),
    };
    Err(ConfigError {
        variable: e.variable,
        value,
        rule: e.rule,
    })
}

/// `WEBHOOK_ALLOWED_NETWORKS`: comma-separated networks the SSRF guard lets through.
fn allowed_networks<F: Fn(&str) -> Option<String>>(
    r: &Reader<F>,
) -> Result<Vec<Cidr>, ConfigError> {
    let networks_raw = r.raw("WEBHOOK_ALLOWED_NETWORKS");
    networks_raw
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<Cidr>().map_err(|rule| ConfigError {
                variable: "WEBHOOK_ALLOWED_NETWORKS",
                value: networks_raw.clone(),
                rule: format!("{s:?}: {rule}"),
            })
        })
        .collect()
}

/// `RUST_LOG` (checked) and whether `LOG_FORMAT` is `json`.
fn logging<F: Fn(&str) -> Option<String>>(r: &Reader<F>) -> Result<(String, bool), ConfigError> {
    let log_format = r.raw("LOG_FORMAT");
    let log_json = match log_format.as_str() {
        "text" => false,
        "json" => true,
        _ => {
            return Err(ConfigError {
                variable: "LOG_FORMAT",
                value: log_format,
                rule: "must be `text` or `json`".into(),
            });
        }
    };
    let log_filter = r.raw("RUST_LOG");
    if let Err(rule) = crate::logging::Filter::parse(&log_filter) {
        return Err(ConfigError {
            variable: "RUST_LOG",
            value: log_filter,
            rule,
        });
    }
    Ok((log_filter, log_json))
}

/// `WEBHOOK_API_TOKEN`, when set: at least 16 characters without spaces (never echoed).
fn api_token<F: Fn(&str) -> Option<String>>(r: &Reader<F>) -> Result<Option<String>, ConfigError> {
    let api_token = (r.lookup)("WEBHOOK_API_TOKEN").filter(|t| !t.trim().is_empty());
    if let Some(token) = &api_token
        && (token.len() < 16 || token.chars().any(|c| c.is_whitespace()))
    {
        return Err(ConfigError {
            variable: "WEBHOOK_API_TOKEN",
            value: "<redacted>".into(),
            rule: "must be at least 16 characters without spaces".into(),
        });
    }
    Ok(api_token)
}

/// `WEBHOOK_INSTANCE_ID`, or `<hostname>-<pid>` when unset.
fn instance_id<F: Fn(&str) -> Option<String>>(r: &Reader<F>) -> Result<String, ConfigError> {
    match r.raw("WEBHOOK_INSTANCE_ID") {
        id if id.is_empty() => Ok(default_instance_id()),
        id if id.len() <= 128 && !id.contains(char::is_whitespace) => Ok(id),
        id => Err(ConfigError {
            variable: "WEBHOOK_INSTANCE_ID",
            value: id,
            rule: "must be at most 128 characters without spaces".into(),
        }),
    }
}

/// Hides the password of a `redis://user:password@host` URL.
pub(crate) fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            format!("{}://***@{}", &url[..scheme_end], &url[at + 1..])
        }
        _ => url.to_string(),
    }
}

impl Config {
    /// Delivery threads of all kinds: first-attempt, retry and slow seats.
    pub(crate) fn all_delivery_threads(&self) -> usize {
        self.delivery_threads + self.retry_threads + self.slow_threads
    }

    /// Idle keep-alive connections the delivery client keeps, all origins together: what the
    /// open-file limit leaves after the API's connections, the delivery threads' own and the
    /// service's other files ([`OTHER_FILES`]), at most [`MAX_IDLE_CONNECTIONS`] and at least
    /// four per delivery thread (and 64). So a fan-out to a few hundred origins keeps each one's
    /// connections under the usual limit of 1,024 files, instead of closing and opening them
    /// again and again (four per delivery thread held 100 origins to a quarter of the rate).
    /// The API counts them against the open-file limit.
    pub(crate) fn delivery_idle_connections(&self) -> usize {
        self.idle_connections_within(open_file_limit())
    }

    /// [`Config::delivery_idle_connections`] under a soft limit of `files` open files.
    fn idle_connections_within(&self, files: Option<u64>) -> usize {
        let floor = (4 * self.all_delivery_threads()).max(64);
        let Some(files) = files else {
            return MAX_IDLE_CONNECTIONS.max(floor);
        };
        let taken = OTHER_FILES + self.api_max_connections + self.all_delivery_threads();
        usize::try_from(files)
            .unwrap_or(usize::MAX)
            .saturating_sub(taken)
            .min(MAX_IDLE_CONNECTIONS)
            .max(floor)
    }

    /// Reads the process environment.
    pub fn from_env() -> Result<Config, ConfigError> {
        Config::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads settings through `lookup` (tests pass a map instead of the environment).
    pub(crate) fn from_lookup(
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let r = Reader { lookup };
        let port = r.number("WEBHOOK_SERVICE_PORT", 1, 65_535)? as u16;
        let host_raw = r.raw("WEBHOOK_SERVICE_HOST");
        let host = host_raw.parse().map_err(|_| ConfigError {
            variable: "WEBHOOK_SERVICE_HOST",
            value: host_raw.clone(),
            rule: "must be an IP address".into(),
        })?;
        let redis_url = redis_url(&r);
        let redis = redis_options(&r)?;
        check_redis(&r, &redis_url, &redis)?;
        let cors_origins: Vec<String> = r
            .raw("CORS_ORIGINS")
            .split(',')
            .map(|o| o.trim().trim_end_matches('/').to_string())
            .filter(|o| !o.is_empty())
            .collect();
        let delivery_threads = r.number("WEBHOOK_DELIVERY_THREADS", 1, 256)? as usize;
        let retry_threads = r.number("WEBHOOK_RETRY_THREADS", 1, 256)? as usize;
        let per_endpoint = r.number("WEBHOOK_MAX_IN_FLIGHT_PER_ENDPOINT", 0, 256)? as usize;
        let max_in_flight_per_endpoint = match per_endpoint {
            0 => (delivery_threads / 2).max(1),
            n => n,
        };
        let allowed_networks = allowed_networks(&r)?;
        let (log_filter, log_json) = logging(&r)?;
        let api_token = api_token(&r)?;
        let public_url = match r.raw("WEBHOOK_SERVICE_URL") {
            url if url.is_empty() => format!("http://localhost:{port}"),
            url => url.trim_end_matches('/').to_string(),
        };
        Ok(Config {
            port,
            host,
            redis_url: redis_url.1,
            redis_url_variable: redis_url.0,
            redis,
            cors_origins,
            node_env: (r.lookup)("NODE_ENV"),
            delivery_threads,
            retry_threads,
            slow_threads: r.number("WEBHOOK_SLOW_THREADS", 1, 1024)? as usize,
            slow_attempt: r.millis("WEBHOOK_SLOW_ATTEMPT_MS", 10, 60_000)?,
            max_in_flight_per_endpoint,
            queue_capacity: r.number("WEBHOOK_QUEUE_CAPACITY", 100, 1_000_000)? as usize,
            timeout: r.millis("WEBHOOK_TIMEOUT_MS", 100, 300_000)?,
            allowed_networks,
            dedupe_window: r.millis("WEBHOOK_DEDUPE_WINDOW_MS", 0, 7 * 86_400_000)?,
            progress_throttle: r.millis("WEBHOOK_PROGRESS_THROTTLE_MS", 0, 3_600_000)?,
            max_retry_after: r.millis("WEBHOOK_MAX_RETRY_AFTER_MS", 1_000, 7 * 86_400_000)?,
            registry_refresh: r.millis("WEBHOOK_REGISTRY_REFRESH_MS", 100, 600_000)?,
            api_token,
            max_body_bytes: r.number("WEBHOOK_MAX_BODY_BYTES", 1024, 104_857_600)? as usize,
            api_max_connections: r.number("WEBHOOK_API_MAX_CONNECTIONS", 8, 4096)? as usize,
            api_idle_timeout: r.millis("WEBHOOK_API_IDLE_TIMEOUT_MS", 100, 600_000)?,
            api_head_timeout: r.millis("WEBHOOK_API_HEAD_TIMEOUT_MS", 100, 600_000)?,
            api_body_timeout: r.millis("WEBHOOK_API_BODY_TIMEOUT_MS", 100, 600_000)?,
            capture_max_bytes: r.number("WEBHOOK_CAPTURE_MAX_BYTES", 1 << 20, 1 << 34)? as usize,
            public_url,
            app_url: r
                .raw("NEXT_PUBLIC_APP_URL")
                .trim_end_matches('/')
                .to_string(),
            instance_id: instance_id(&r)?,
            instance_ttl: r.millis("WEBHOOK_INSTANCE_TTL_MS", 1000, 600_000)?,
            shutdown_timeout: r.millis("WEBHOOK_SHUTDOWN_TIMEOUT_MS", 0, 600_000)?,
            event_stream: Some(r.raw("WEBHOOK_EVENT_STREAM")).filter(|s| !s.is_empty()),
            stream_group: r.raw("WEBHOOK_STREAM_GROUP"),
            disconnect_after: r.number("WEBHOOK_DISCONNECT_AFTER", 1, 10_000)?,
            half_open_after: r.millis("WEBHOOK_HALF_OPEN_AFTER_MS", 1000, 86_400_000)?,
            dead_letter_max: r.number("WEBHOOK_DEAD_LETTER_MAX", 100, 10_000_000)?,
            dead_letter_max_age: r.millis(
                "WEBHOOK_DEAD_LETTER_MAX_AGE_MS",
                60_000,
                31_536_000_000,
            )?,
            log_filter,
            log_json,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::collections::HashMap;

    fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|name| map.get(name).cloned())
    }

    #[test]
    fn defaults_are_valid() {
        let c = config(&[]).map_err(|e| e.to_string());
        let c = match c {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(c.port, 3335);
        assert_eq!(c.redis_url, "redis://localhost:6379");
        assert_eq!(c.max_in_flight_per_endpoint, 4);
        assert!(c.allowed_networks.is_empty());
    }

    #[test]
    fn hub_redis_url_is_read_when_redis_url_is_unset() {
        let c = config(&[("HUB_REDIS_URL", "redis://hub:1")]).map(|c| c.redis_url);
        assert_eq!(c, Ok("redis://hub:1".to_string()));
        let c = config(&[
            ("HUB_REDIS_URL", "redis://hub:1"),
            ("REDIS_URL", "redis://r:2"),
        ]);
        assert_eq!(c.map(|c| c.redis_url), Ok("redis://r:2".to_string()));
    }

    #[test]
    fn bad_values_name_the_variable() {
        let cases = [
            ("WEBHOOK_SERVICE_PORT", "70000"),
            ("WEBHOOK_SERVICE_PORT", "abc"),
            ("WEBHOOK_DELIVERY_THREADS", "0"),
            ("WEBHOOK_TIMEOUT_MS", "-5"),
            ("WEBHOOK_ALLOWED_NETWORKS", "127.0.0.0/33"),
            ("WEBHOOK_ALLOWED_NETWORKS", "localhost"),
            ("REDIS_URL", "http://x"),
            ("LOG_FORMAT", "xml"),
            ("RUST_LOG", "loud"),
            ("WEBHOOK_SERVICE_HOST", "everywhere"),
            ("WEBHOOK_API_TOKEN", "short"),
            ("WEBHOOK_MAX_BODY_BYTES", "10"),
            ("WEBHOOK_CAPTURE_MAX_BYTES", "1000"),
            ("WEBHOOK_API_HEAD_TIMEOUT_MS", "0"),
            ("REDIS_TLS_UNSAFE_SKIP_VERIFY", "yes"),
            // TLS files without a TLS URL.
            ("REDIS_TLS_CA_FILE", "/etc/hostname"),
            ("REDIS_URL", "redis+sentinel://s1:26379"),
        ];
        for (name, value) in cases {
            match config(&[(name, value)]) {
                Ok(_) => panic!("{name}={value} was accepted"),
                Err(e) => {
                    assert_eq!(e.variable, name);
                    assert!(e.to_string().contains(name), "{e}");
                }
            }
        }
    }

    #[test]
    fn the_readme_lists_every_setting_with_its_default() {
        let readme = include_str!("../../README.md");
        for setting in SETTINGS {
            let default = if setting.default.is_empty() {
                String::new()
            } else {
                format!(" `{}`", setting.default)
            };
            let row = format!("| `{}` |{} | {} |", setting.name, default, setting.doc);
            assert!(readme.contains(&row), "README lacks the row {row}");
        }
    }

    #[test]
    fn tls_and_sentinel_urls_are_accepted() {
        for url in [
            "rediss://u:p@redis.example.com:6380/1",
            "redis+sentinel://s1:26379,s2:26379/mymaster",
            "rediss+sentinel://u:p@s1,s2/mymaster/2",
        ] {
            let c = config(&[("REDIS_URL", url)]).map(|c| c.redis_url);
            assert_eq!(c, Ok(url.to_string()));
        }
    }

    #[test]
    fn redis_password_is_redacted() {
        assert_eq!(redact_url("redis://u:secret@h:1/0"), "redis://***@h:1/0");
        assert_eq!(redact_url("redis://h:1"), "redis://h:1");
    }

    #[test]
    fn debug_shows_no_password_or_token() {
        let config = config(&[
            (
                "REDIS_URL",
                "redis+sentinel://u:url-password@h1:26379/mymaster",
            ),
            ("REDIS_SENTINEL_PASSWORD", "sentinel-password"),
            ("WEBHOOK_API_TOKEN", "api-token-0123456789"),
        ]);
        let shown = match config {
            Ok(config) => format!("{config:?}"),
            Err(e) => panic!("{e}"),
        };
        for hidden in ["url-password", "sentinel-password", "api-token-0123456789"] {
            assert!(!shown.contains(hidden), "{hidden} in {shown}");
        }
        assert!(shown.contains("<redacted>"), "{shown}");
    }

    #[test]
    fn idle_delivery_connections_take_what_the_open_file_limit_leaves() {
        let config = Config::from_lookup(|_| None).unwrap_or_else(|e| panic!("{e}"));
        let threads = config.all_delivery_threads();
        let floor = (4 * threads).max(64);
        // The usual soft limit: room for 100 origins of four connections each.
        let usual = config.idle_connections_within(Some(1024));
        assert_eq!(
            usual,
            1024 - OTHER_FILES - config.api_max_connections - threads
        );
        assert!(usual >= 400, "{usual}");
        assert_eq!(config.idle_connections_within(Some(300)), floor);
        assert_eq!(
            config.idle_connections_within(Some(1_048_576)),
            MAX_IDLE_CONNECTIONS
        );
        assert_eq!(config.idle_connections_within(None), MAX_IDLE_CONNECTIONS);
    }
}
