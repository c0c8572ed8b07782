//! A small `log` backend: one line per record on stderr, as text or JSON.
//!
//! Levels (what each means in this service):
//! - error: something was lost or needs an operator;
//! - warn: a webhook gave up or was disabled, a new kind of bad message, Redis lost;
//! - info: lifecycle and webhook changes;
//! - debug: one line per attempt (webhook, event, attempt, status, ms);
//! - trace: wire-level detail.
//!
//! Secrets, signatures and custom header values are never logged.

use std::io::Write;

use log::{Level, LevelFilter, Log, Metadata, Record};

use crate::time;

/// A parsed `RUST_LOG`: a default level and per-module overrides.
#[derive(Debug, Clone)]
pub(crate) struct Filter {
    default: LevelFilter,
    /// (module prefix, level), longest prefix first.
    modules: Vec<(String, LevelFilter)>,
}

impl Filter {
    /// Parses `info` or `warn,webhook_service::delivery=debug`.
    pub(crate) fn parse(spec: &str) -> Result<Filter, String> {
        let mut filter = Filter {
            default: LevelFilter::Info,
            modules: Vec::new(),
        };
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part.split_once('=') {
                Some((module, level)) => {
                    filter
                        .modules
                        .push((module.trim().to_string(), level_of(level)?));
                }
                // A bare word is a level; modules are named as `module=level`.
                None => filter.default = level_of(part)?,
            }
        }
        filter
            .modules
            .sort_by_key(|(m, _)| std::cmp::Reverse(m.len()));
        Ok(filter)
    }

    fn level_for(&self, target: &str) -> LevelFilter {
        self.modules
            .iter()
            .find(|(m, _)| target.starts_with(m.as_str()))
            .map(|(_, l)| *l)
            .unwrap_or(self.default)
    }

    fn max(&self) -> LevelFilter {
        self.modules
            .iter()
            .map(|(_, l)| *l)
            .chain([self.default])
            .max()
            .unwrap_or(LevelFilter::Info)
    }
}

fn level_of(text: &str) -> Result<LevelFilter, String> {
    match text.trim().to_ascii_lowercase().as_str() {
        "off" => Ok(LevelFilter::Off),
        "error" => Ok(LevelFilter::Error),
        "warn" => Ok(LevelFilter::Warn),
        "info" => Ok(LevelFilter::Info),
        "debug" => Ok(LevelFilter::Debug),
        "trace" => Ok(LevelFilter::Trace),
        other => Err(format!(
            "{other:?} is not a level (off, error, warn, info, debug, trace)"
        )),
    }
}

struct Logger {
    filter: Filter,
    json: bool,
}

impl Log for Logger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= self.filter.level_for(metadata.target())
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let now = time::iso8601(time::now_ms());
        let line = if self.json {
            let mut object = serde_json::Map::new();
            object.insert("ts".into(), now.into());
            object.insert("level".into(), record.level().as_str().into());
            object.insert("target".into(), record.target().into());
            object.insert("msg".into(), record.args().to_string().into());
            let mut text = serde_json::Value::Object(object).to_string();
            text.push('\n');
            text
        } else {
            let level = match record.level() {
                Level::Error => "ERROR",
                Level::Warn => "WARN ",
                Level::Info => "INFO ",
                Level::Debug => "DEBUG",
                Level::Trace => "TRACE",
            };
            format!("{now} {level} {}: {}\n", record.target(), record.args())
        };
        // A failed write to stderr has nowhere better to be reported.
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }

    fn flush(&self) {}
}

/// Installs the logger. Calling it twice keeps the first.
pub fn init(filter: &str, json: bool) -> Result<(), String> {
    let filter = Filter::parse(filter)?;
    let max = filter.max();
    log::set_boxed_logger(Box::new(Logger { filter, json }))
        .map(|()| log::set_max_level(max))
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limit_holds_back_and_counts() {
        let limit = RateLimit::new(60_000);
        assert_eq!(limit.allow(), Some(0));
        assert_eq!(limit.allow(), None);
        assert_eq!(limit.allow(), None);
        limit.last_ms.store(0, std::sync::atomic::Ordering::Relaxed);
        assert_eq!(limit.allow(), Some(2));
    }

    #[test]
    fn filters_parse() {
        let f = Filter::parse("warn,webhook_service::delivery=debug,ureq=off");
        let f = match f {
            Ok(f) => f,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(
            f.level_for("webhook_service::delivery::pool"),
            LevelFilter::Debug
        );
        assert_eq!(f.level_for("webhook_service::api"), LevelFilter::Warn);
        assert_eq!(f.level_for("ureq::run"), LevelFilter::Off);
        assert!(Filter::parse("loud!").is_err());
    }
}

/// At most one line per period from one call site; the lines held back are counted and reported
/// with the next one that passes. For warnings a failing endpoint or store could otherwise repeat
/// thousands of times a second.
#[derive(Debug)]
pub(crate) struct RateLimit {
    period_ms: u64,
    last_ms: std::sync::atomic::AtomicU64,
    suppressed: std::sync::atomic::AtomicU64,
}

impl RateLimit {
    /// A limit of one line per `period_ms`.
    pub(crate) const fn new(period_ms: u64) -> RateLimit {
        RateLimit {
            period_ms,
            last_ms: std::sync::atomic::AtomicU64::new(0),
            suppressed: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// `Some(n)` if a line may be written now (`n` lines were held back since the last one),
    /// `None` if this one is held back.
    pub(crate) fn allow(&self) -> Option<u64> {
        use std::sync::atomic::Ordering::Relaxed;
        let now = time::now_ms();
        let last = self.last_ms.load(Relaxed);
        if now.saturating_sub(last) >= self.period_ms
            && self
                .last_ms
                .compare_exchange(last, now, Relaxed, Relaxed)
                .is_ok()
        {
            return Some(self.suppressed.swap(0, Relaxed));
        }
        self.suppressed.fetch_add(1, Relaxed);
        None
    }
}

/// `warn!` at most once per period per call site, with the count of lines held back.
#[macro_export]
macro_rules! warn_limited {
    ($period_ms:expr, $($arg:tt)+) => {{
        static LIMIT: $crate::logging::RateLimit = $crate::logging::RateLimit::new($period_ms);
        if let Some(held_back) = LIMIT.allow() {
            if held_back > 0 {
                log::warn!("{} ({} similar lines held back)", format_args!($($arg)+), held_back);
            } else {
                log::warn!($($arg)+);
            }
        }
    }};
}
