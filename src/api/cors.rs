//! CORS by exact origin (CONTRACT section 6). The original let any origin containing
//! "localhost" through (reference B9); here an origin is allowed only if `CORS_ORIGINS` lists it
//! exactly, or is `*`. An allowed origin is reflected with credentials, as the monitor UI expects.

/// Methods announced to browsers.
pub(crate) const METHODS: &str = "GET,POST,PUT,DELETE,PATCH,OPTIONS";
/// Request headers announced to browsers.
pub(crate) const HEADERS: &str = "Content-Type,Authorization,X-Requested-With,Accept,Origin";

/// The allowed origins.
#[derive(Debug, Clone)]
pub(crate) struct Cors {
    any: bool,
    origins: Vec<String>,
}

impl Cors {
    /// From `CORS_ORIGINS` entries.
    pub(crate) fn new(origins: &[String]) -> Cors {
        Cors {
            any: origins.iter().any(|o| o == "*"),
            origins: origins.iter().filter(|o| *o != "*").cloned().collect(),
        }
    }

    /// Whether a browser at `origin` may read responses.
    pub(crate) fn allows(&self, origin: &str) -> bool {
        self.any
            || self
                .origins
                .iter()
                .any(|o| o == origin.trim_end_matches('/'))
    }

    /// Headers for a response to an allowed `origin`.
    pub(crate) fn response_headers(origin: &str) -> Vec<(&'static str, String)> {
        vec![
            ("Access-Control-Allow-Origin", origin.to_string()),
            ("Vary", "Origin".to_string()),
            ("Access-Control-Allow-Credentials", "true".to_string()),
        ]
    }

    /// Headers for an allowed preflight.
    pub(crate) fn preflight_headers(origin: &str) -> Vec<(&'static str, String)> {
        let mut headers = Cors::response_headers(origin);
        headers.push(("Access-Control-Allow-Methods", METHODS.to_string()));
        headers.push(("Access-Control-Allow-Headers", HEADERS.to_string()));
        headers.push(("Access-Control-Max-Age", "600".to_string()));
        headers
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_origins_only() {
        let cors = Cors::new(&["https://qmonitor.emerge.pizza".to_string()]);
        assert!(cors.allows("https://qmonitor.emerge.pizza"));
        assert!(
            !cors.allows("http://localhost.evil.com"),
            "b9: no substring matches"
        );
        assert!(!cors.allows("https://qmonitor.emerge.pizza.evil.com"));
        assert!(Cors::new(&["*".to_string()]).allows("http://anything"));
    }
}
