//! The retry policy of a webhook (`retry_config`) and the bounds of each of its fields.

use serde_json::{Map, Value};

use super::ValidationError;

/// Bounds of `retry_config.max_attempts` (attempts in all, the first included).
pub(crate) const ATTEMPTS: (u64, u64) = (1, 50);
/// Bounds of `retry_config.initial_delay_ms`.
pub(crate) const INITIAL_DELAY_MS: (u64, u64) = (10, 86_400_000);
/// Bounds of `retry_config.backoff_multiplier`.
pub(crate) const MULTIPLIER: (f64, f64) = (1.0, 10.0);
/// Bounds of `retry_config.max_delay_ms` (at most 7 days).
pub(crate) const MAX_DELAY_MS: (u64, u64) = (10, 7 * 86_400_000);

/// How failed deliveries are retried (CONTRACT section 6, "Backoff").
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct RetryPolicy {
    /// Attempts in all, the first included. 1..=50.
    pub(crate) max_attempts: u32,
    /// Delay before the second attempt. 10..=86,400,000 ms.
    pub(crate) initial_delay_ms: u64,
    /// Growth of the delay per attempt. 1.0..=10.0.
    pub(crate) backoff_multiplier: f64,
    /// Largest delay; at least `initial_delay_ms`.
    pub(crate) max_delay_ms: u64,
}

impl Default for RetryPolicy {
    /// 11 attempts: 5 s, 20 s, 80 s, 5 min, 21 min, 85 min, 5.7 h, then 10 h four times, about
    /// 47 hours in all, after the Standard Webhooks guidance of a schedule spanning days.
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 11,
            initial_delay_ms: 5_000,
            backoff_multiplier: 4.0,
            max_delay_ms: 36_000_000,
        }
    }
}

impl RetryPolicy {
    /// The stored form.
    pub(crate) fn to_json(self) -> Value {
        let mut map = Map::new();
        map.insert("max_attempts".into(), Value::from(self.max_attempts));
        map.insert(
            "initial_delay_ms".into(),
            Value::from(self.initial_delay_ms),
        );
        // Integral multipliers are stored as integers, as JavaScript would write them.
        let multiplier = if self.backoff_multiplier.fract() == 0.0 {
            Value::from(self.backoff_multiplier as u64)
        } else {
            serde_json::Number::from_f64(self.backoff_multiplier)
                .map(Value::Number)
                .unwrap_or(Value::from(2))
        };
        map.insert("backoff_multiplier".into(), multiplier);
        map.insert("max_delay_ms".into(), Value::from(self.max_delay_ms));
        Value::Object(map)
    }

    /// Merges a (possibly partial) stored or requested `retry_config` over `self`, validating each
    /// field (the original's B4: a partial object must not lose the defaults).
    pub(crate) fn merged(&self, value: &Value) -> Result<RetryPolicy, ValidationError> {
        let mut policy = *self;
        let map = match value {
            Value::Null => return Ok(policy),
            Value::Object(map) => map,
            _ => return Err(ValidationError::new("retry_config", "must be an object")),
        };
        for (key, v) in map {
            let field = format!("retry_config.{key}");
            match key.as_str() {
                "max_attempts" => {
                    policy.max_attempts = integer(v, &field, ATTEMPTS.0, ATTEMPTS.1)? as u32;
                }
                "initial_delay_ms" => {
                    policy.initial_delay_ms =
                        integer(v, &field, INITIAL_DELAY_MS.0, INITIAL_DELAY_MS.1)?;
                }
                "backoff_multiplier" => {
                    let m = v
                        .as_f64()
                        .ok_or_else(|| ValidationError::new(&field, "must be a number"))?;
                    if !(MULTIPLIER.0..=MULTIPLIER.1).contains(&m) {
                        return Err(ValidationError::new(
                            &field,
                            &format!(
                                "must be between {:.1} and {:.1}",
                                MULTIPLIER.0, MULTIPLIER.1
                            ),
                        ));
                    }
                    policy.backoff_multiplier = m;
                }
                "max_delay_ms" => {
                    policy.max_delay_ms = integer(v, &field, MAX_DELAY_MS.0, MAX_DELAY_MS.1)?;
                }
                _ => return Err(ValidationError::new(&field, "is not a retry_config field")),
            }
        }
        if policy.max_delay_ms < policy.initial_delay_ms {
            return Err(ValidationError::new(
                "retry_config.max_delay_ms",
                "must be at least retry_config.initial_delay_ms",
            ));
        }
        Ok(policy)
    }
}

fn integer(v: &Value, field: &str, min: u64, max: u64) -> Result<u64, ValidationError> {
    let n = v
        .as_u64()
        .or_else(|| {
            v.as_f64()
                .filter(|f| f.fract() == 0.0 && *f >= 0.0)
                .map(|f| f as u64)
        })
        .ok_or_else(|| ValidationError::new(field, "must be a whole number"))?;
    if n < min || n > max {
        return Err(ValidationError::new(
            field,
            &format!("must be between {min} and {max}"),
        ));
    }
    Ok(n)
}
